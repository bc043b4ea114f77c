"""The wire protocol between the pool's process and a worker process, used by both ends.

Every message is one frame of the socket transport (``_socket.py``): a fixed header,
then a pickled body. The parent sends ``RUN`` (a chunk: the function's bytes if this
worker has not seen it yet, then the pickled items) and ``STOP``; the worker answers
``READY`` once it can take work, ``DONE`` for each chunk in the order they came,
``INIT_FAILED`` when its initializer raised, and ``RETIRING`` before it exits on its
own (its memory limit), so that what it still holds is known never to have started.

``WorkerConfig`` is what a worker needs to start; ``WorkerExit`` the exit codes by which
a worker that ended on purpose says why.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any


class MessageKind(enum.IntEnum):
    # parent -> worker
    RUN = 1
    STOP = 2
    # worker -> parent
    DONE = 3
    READY = 4
    INIT_FAILED = 5
    RETIRING = 6


# parent -> worker: kind, chunk id, function id, call mode, function-bytes length
TASK_HEADER = struct.Struct("<BQQBQ")
# worker -> parent: kind, chunk id, compute seconds, and (DONE) a mask of the chunk's
# shared-memory segments the worker has let go of (see _shm.py)
RESULT_HEADER = struct.Struct("<BQdQ")


class WorkerExit(enum.IntEnum):
    """Exit codes of a worker that ended on purpose (anything else is a crash)."""

    INIT_FAILED = 3  # its initializer raised; it said so first (INIT_FAILED)
    PARENT_GONE = 4  # the pool's process died; nobody is left to serve
    # It found, while importing the main module, that the module creates a pool at
    # import time (no `if __name__ == "__main__":` guard); the parent says why, once.
    MAIN_WITHOUT_GUARD = 5


@dataclass
class WorkerConfig:
    """What a worker needs to start; pickled by value (cloudpickle) by the parent.

    ``initargs`` travel apart, as a ``Process`` argument pickled by multiprocessing
    itself, because objects such as ``multiprocessing.Queue`` may only be pickled while a
    process is being spawned (exactly as with the stdlib's ``Pool``).

    ``stdlib_results``: pickle results with the stdlib pickler only, as the drop-in
    pools must (a result only cloudpickle can pickle fails there too).
    ``result_error``: the exception type a result that cannot be pickled becomes
    (``MaybeEncodingError`` for ``multiprocessing``), or None for the pickler's own
    exception with a note.
    """

    initializer: Any
    worker_state: Any
    max_tasks: int | None
    max_memory: int | None
    pool_pid: int
    start_method: str
    stdlib_results: bool = False
    result_error: type[Exception] | None = None


__all__ = [
    "RESULT_HEADER",
    "TASK_HEADER",
    "MessageKind",
    "WorkerConfig",
    "WorkerExit",
]
