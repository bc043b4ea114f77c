"""How many CPUs this process may really use: affinity and cgroup quota, not the machine's."""

from __future__ import annotations

import math
import os

# Plain strings, not pathlib: `import conveyor` stays light.
_CGROUP_V2_MAX = "/sys/fs/cgroup/cpu.max"
_CGROUP_V1_QUOTA = "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"
_CGROUP_V1_PERIOD = "/sys/fs/cgroup/cpu/cpu.cfs_period_us"


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
        if os.path.exists(_CGROUP_V2_MAX):
            quota, period = _read(_CGROUP_V2_MAX).split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if os.path.exists(_CGROUP_V1_QUOTA):
            quota_us = int(_read(_CGROUP_V1_QUOTA))
            period_us = int(_read(_CGROUP_V1_PERIOD))
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None
    return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
