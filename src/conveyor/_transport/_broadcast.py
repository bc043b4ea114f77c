"""An object given once to every worker of a pool (``WorkerPool(shared=...)``).

Pickled once, in the parent; its large buffers (NumPy arrays, anything pickle protocol 5
sends out of band) go into memfds that every worker maps read-only, so a 200 MB model
costs 200 MB on the machine, not 200 MB a worker, under every start method (a forked
worker inherits the descriptors, a spawned one gets them through ``multiprocessing``'s
own descriptor passing). A worker unpickles it on first use. The parent closes its
descriptors when the pool ends; the kernel frees the memory once the last worker that
mapped it is gone.
"""

from __future__ import annotations

import mmap
import os
import threading
from multiprocessing import reduction
from typing import Any

from ._fds import close_fds
from ._serialize import LOCAL, loads
from ._shm import OutOfBand

_UNSET: Any = object()


class Broadcast:
    """One pickled object and the memfds of its buffers."""

    def __init__(self, data: bytes, fds: list[int]) -> None:
        self.data = data
        self.fds = fds
        self._value: Any = _UNSET
        self._lock = threading.Lock()

    @classmethod
    def of(cls, obj: Any) -> Broadcast:
        oob = OutOfBand()
        try:
            data = LOCAL.dumps(obj, oob)
        except Exception as exc:
            raise TypeError(
                f"conveyor: cannot share a {type(obj).__name__} with the workers "
                f"(it cannot be pickled: {exc})"
            ) from exc
        return cls(data, oob.fds)

    def value(self) -> Any:
        """The object, unpickled on first use; its buffers are the shared, read-only
        mappings (a NumPy array in it is not writeable)."""
        if self._value is _UNSET:
            with self._lock:
                if self._value is _UNSET:
                    self._value = loads(self.data, buffers=[_map_read_only(fd) for fd in self.fds])
        return self._value

    def close(self) -> None:
        fds, self.fds = self.fds, []
        close_fds(fds)

    def __reduce__(self) -> Any:
        # Only as a worker's ``Process`` argument: DupFd hands each descriptor to the
        # child being started.
        return _rebuild, (self.data, [reduction.DupFd(fd) for fd in self.fds])


def _rebuild(data: bytes, dups: list[Any]) -> Broadcast:
    return Broadcast(data, [dup.detach() for dup in dups])


def _map_read_only(fd: int) -> mmap.mmap:
    return mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ)


__all__ = ["Broadcast"]
