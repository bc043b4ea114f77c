"""How many CPUs this process may really use: affinity and cgroup quota, not the machine's."""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
_CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def available_cpus() -> int:
    """CPUs usable by this process: the affinity mask, capped by a cgroup CPU quota.

    A container limited to 2 CPUs on a 64-core host gets 2, not 64 (``os.cpu_count()``
    would say 64 and oversubscribe it 32 times).

    Example::

        conveyor.available_cpus()   # 2 on this machine
    """
    count = _affinity_count()
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _affinity_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cgroup_quota() -> float | None:
    """CPU quota in CPUs (e.g. 1.5), or None when unlimited or unknown."""
    try:
        if _CGROUP_V2_MAX.exists():
            quota, period = _CGROUP_V2_MAX.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if _CGROUP_V1_QUOTA.exists():
            quota_us = int(_CGROUP_V1_QUOTA.read_text())
            period_us = int(_CGROUP_V1_PERIOD.read_text())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None
