"""The default pool size is the CPUs this process may use, not the machine's count."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import conveyor
from conveyor import _cpus


def test_available_cpus_follows_the_affinity_mask():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no affinity API on this platform")
    code = "import os, conveyor; os.sched_setaffinity(0, {0}); print(conveyor.available_cpus())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "1"


def test_a_cgroup_quota_caps_the_count(monkeypatch, tmp_path):
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")  # 1.5 CPUs -> 2
    monkeypatch.setattr(_cpus, "_CGROUP_V2_MAX", str(cpu_max))
    monkeypatch.setattr(_cpus, "_affinity_count", lambda: 64)
    assert conveyor.available_cpus() == 2
    cpu_max.write_text("max 100000\n")
    assert conveyor.available_cpus() == 64


def test_pool_default_size_uses_available_cpus(monkeypatch):
    monkeypatch.setattr("conveyor._backends._thread.available_cpus", lambda: 3)
    with conveyor.ThreadPool() as pool:
        assert pool.stats().size == 3
