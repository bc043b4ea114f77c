"""Large buffers through shared memory: pickle protocol 5 out-of-band, over memfd.

A NumPy array (or any PEP 574 buffer) of at least ``OOB_MIN_BYTES`` is not copied through
the socket. It is copied once into an anonymous memory file (``memfd_create``), whose file
descriptor travels with the frame (``SCM_RIGHTS``); the receiver maps it and the
unpickled array points straight at that memory. Nothing has a name, so nothing can leak:
the kernel frees the memory when the last descriptor and mapping are gone, whoever
crashed. Where memfd or descriptor passing is missing (not Linux), buffers stay in-band.

Arguments reuse their memory. Most of the cost of a fresh memfd is the kernel allocating
and zeroing its pages (~4 ms for 8 MB here, against ~0.8 ms to write into pages that
exist), so the parent keeps the segments a worker has finished with (``SegmentCache``)
and writes the next arguments of that size into one of them. A worker reports a segment
finished only when no object of the task's still refers to its mapping (its reference
count says so), so a task that keeps an argument alive is never overwritten under it.
Results are not reused: the caller owns the arrays they become, for as long as it likes.
"""

from __future__ import annotations

import mmap
import os
import pickle
import sys
import threading

from ._fds import MAX_FDS_PER_FRAME, PASSING_AVAILABLE, close_fds

# Below this, a buffer rides in the pickle: a memfd costs a few system calls.
OOB_MIN_BYTES = 1 << 20
AVAILABLE = PASSING_AVAILABLE and hasattr(os, "memfd_create")
# Free argument segments the parent keeps for reuse, per pool, in bytes. Beyond this a
# finished segment is closed; the cap bounds what an idle pool holds on to.
MAX_CACHED_BYTES = 128 << 20


class Segment:
    """One memfd the parent owns, with the size it was made for."""

    __slots__ = ("fd", "nbytes")

    def __init__(self, nbytes: int) -> None:
        self.fd = os.memfd_create("conveyor-buffer", os.MFD_CLOEXEC)
        self.nbytes = nbytes
        try:
            os.ftruncate(self.fd, nbytes)
        except BaseException:
            os.close(self.fd)
            raise

    def write(self, view: memoryview) -> None:
        written = 0
        while written < view.nbytes:
            written += os.pwrite(self.fd, view[written:], written)

    def close(self) -> None:
        close_fds([self.fd])


class SegmentCache:
    """Argument segments a worker has finished with, kept for the next arguments.

    Thread-safe: callers take segments while sending, the supervisor gives them back as
    results arrive.
    """

    def __init__(self, max_bytes: int = MAX_CACHED_BYTES) -> None:
        self._max_bytes = max_bytes
        self._free: dict[int, list[Segment]] = {}  # by size
        self._free_bytes = 0
        self._lock = threading.Lock()
        self._closed = False
        self.created = 0
        self.reused = 0

    def take(self, nbytes: int) -> Segment:
        with self._lock:
            same_size = self._free.get(nbytes)
            if same_size:
                self._free_bytes -= nbytes
                self.reused += 1
                return same_size.pop()
            self.created += 1
        return Segment(nbytes)

    def give_back(self, segments: list[Segment], released_mask: int = -1) -> None:
        """Keep the segments whose bit is set in ``released_mask``; close the others."""
        for position, segment in enumerate(segments):
            if released_mask >> position & 1 and self._keep(segment):
                continue
            segment.close()

    def _keep(self, segment: Segment) -> bool:
        with self._lock:
            if self._closed or self._free_bytes + segment.nbytes > self._max_bytes:
                return False
            self._free.setdefault(segment.nbytes, []).append(segment)
            self._free_bytes += segment.nbytes
            return True

    def discard(self, segments: list[Segment]) -> None:
        for segment in segments:
            segment.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            free, self._free = self._free, {}
            self._free_bytes = 0
        for segments in free.values():
            self.discard(segments)


class OutOfBand:
    """A ``buffer_callback`` for pickle: large contiguous buffers go into memfds.

    After ``pickle.dumps(..., buffer_callback=collector)``, ``fds`` holds one descriptor
    per out-of-band buffer, in the order the pickle refers to them, and ``nbytes`` their
    total size. The caller owns the descriptors (close them once sent). With a ``cache``
    the memory comes from reused segments, listed in ``segments`` (``fds`` are duplicates
    of theirs); hand them back to the cache when the receiver is done.
    """

    def __init__(self, cache: SegmentCache | None = None) -> None:
        self.fds: list[int] = []
        self.segments: list[Segment] = []
        self.nbytes = 0
        self._cache = cache

    def __call__(self, buffer: pickle.PickleBuffer) -> bool:
        """Return True to keep ``buffer`` in-band, False once it is in a memfd."""
        if len(self.fds) >= MAX_FDS_PER_FRAME:
            return True
        try:
            view = buffer.raw()
        except BufferError:  # not contiguous: pickle copies it in-band
            return True
        if view.nbytes < OOB_MIN_BYTES:
            return True
        if self._cache is None:
            self.fds.append(to_memfd(view))
        else:
            segment = self._cache.take(view.nbytes)
            self.segments.append(segment)
            segment.write(view)
            self.fds.append(os.dup(segment.fd))
        self.nbytes += view.nbytes
        return False

    def close(self) -> None:
        """Undo: close the descriptors; unsent segments go straight back to the cache."""
        close_fds(self.fds)
        self.fds = []
        if self._cache is not None:
            self._cache.give_back(self.segments)
        self.segments = []


class MappedBuffers:
    """The receiving side: segments mapped into memory, passed to ``pickle.loads``.

    ``released_mask()`` tells, after the task, which mappings no object refers to any
    more: bit i set means segment i may be written again by the parent.
    """

    def __init__(self, fds: list[int]) -> None:
        self.buffers = map_fds(fds)
        # The reference count of a mapping that only this list holds. Measured, not
        # assumed: the interpreter's own counting differs between versions.
        self._baseline = self._references(0) if self.buffers else 0

    def _references(self, position: int) -> int:
        return sys.getrefcount(self.buffers[position])

    def released_mask(self) -> int:
        mask = 0
        for position in range(len(self.buffers)):
            if self._references(position) > self._baseline:
                continue  # an array of the task's still lives on this memory
            try:
                self.buffers[position].close()
            except BufferError:  # a buffer export remains: treat it as still in use
                continue
            mask |= 1 << position
        self.buffers = []
        return mask


def to_memfd(view: memoryview) -> int:
    """A new memfd holding ``view``; the caller owns the descriptor."""
    segment = Segment(view.nbytes)
    try:
        segment.write(view)
    except BaseException:
        segment.close()
        raise
    return segment.fd


def map_fds(fds: list[int]) -> list[mmap.mmap]:
    """Map received memfds (closing the descriptors); the mappings keep the memory alive."""
    mappings = []
    try:
        for fd in fds:
            mappings.append(mmap.mmap(fd, os.fstat(fd).st_size))
    finally:
        close_fds(fds)
    return mappings
