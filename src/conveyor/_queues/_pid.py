"""Processes as the queues and pipes see them: this one's pid, and whether another runs."""

from __future__ import annotations

import os


class _Pid:
    """This process's pid, kept current across forks: ``os.getpid`` is a system call,
    and every operation asks whether it still runs in the process that set it up."""

    current = os.getpid()

    @classmethod
    def refresh(cls) -> None:
        cls.current = os.getpid()


os.register_at_fork(after_in_child=_Pid.refresh)


def current_pid() -> int:
    return _Pid.current


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    if pid == 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rpartition(b")")[2][1:2]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie then counts as alive)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in (b"Z", b"X")


def start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``,
    field 22): with the pid, a name no later process can take. None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    # fields[0] is field 3 (the state), so field 22 is fields[19].
    return int(fields[19])


__all__ = ["alive", "current_pid", "start_ticks"]
