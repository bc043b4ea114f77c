"""Tasks of the shared-object tests (importable under spawn and forkserver)."""

from __future__ import annotations

import os

import conveyor


def read_shared(i):
    table = conveyor.shared()
    return table["weights"][i].item(), table["name"], os.getpid()


def try_to_write(_):
    table = conveyor.shared()
    try:
        table["weights"][0] = 1.0
    except ValueError as exc:
        return f"refused: {exc}"
    return "written"


def identity_of_shared(_):
    return id(conveyor.shared()), os.getpid()


def mapped_memfds(_):
    """The distinct memfd inodes this worker maps (to see they are the parent's)."""
    inodes = set()
    with open(f"/proc/{os.getpid()}/maps") as maps:
        for line in maps:
            if "memfd:" in line:
                inodes.add(int(line.split()[4]))
    conveyor.shared()
    with open(f"/proc/{os.getpid()}/maps") as maps:
        after = {int(line.split()[4]) for line in maps if "memfd:" in line}
    return sorted(after - inodes) or sorted(after)
