"""One engine slot on Dask: one thread of one Dask worker, and the chunks sent to it.

Every chunk is a Dask task pinned to the slot's worker (``workers=[address]``,
``allow_other_workers=False``): Dask never moves or re-runs it behind the engine's back,
so the engine's rules hold unchanged (only the chunks a lost worker held are re-run, the
running one charged). Answers are handed to the engine in the order the chunks were sent,
even when a worker with several threads finishes them out of order.

A slot waits (``host`` None) until the cluster has a worker with a free thread, and
is sent no work meanwhile (``Capabilities.sends_before_ready`` is False): the engine
counts a task's timeout from when it is sent, and a slot may wait seconds for a worker.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..._engine._jobs import Chunk
from ..._engine._states import KillReason, Slot
from ._remote import run_pool_chunk

if TYPE_CHECKING:
    from ._backend import DaskBackend


@dataclass
class Sent:
    """A chunk submitted as a Dask task, and its answer once read."""

    chunk_id: int
    future: Any
    answer: tuple[Any, ...] | None = None


class DaskWorker:
    """The handle of one slot (see the module docstring)."""

    def __init__(self, backend: DaskBackend, slot: Slot) -> None:
        self.backend = backend
        self.slot = slot
        self.pid: int | None = None
        self.host: str | None = None  # the Dask worker's address, once it has one
        self.lock = threading.Lock()
        self.sent: OrderedDict[str, Sent] = OrderedDict()
        self.stopping = False
        self.exited = False

    # --- called by the engine (its lock held): never block, never call back ---------------

    def send(self, chunk: Chunk) -> int:
        payload = self.backend.encode_items(chunk)
        with self.lock:
            if not self.exited:  # else the worker is gone: its exit settles the chunk
                self._submit(chunk, payload)
        return len(payload[0])

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            idle = not self.sent
        if idle:
            self.backend.post_exit(self, 0)

    def kill(self) -> None:
        """Stop the running task: restart its Dask worker (a timeout, a cancel).

        Terminating the pool only withdraws the slot's tasks: a worker of a cluster the pool
        does not own is not restarted for that, and one it owns is closed with the pool.
        """
        restart = self.slot.kill_reason in (KillReason.TIMEOUT, KillReason.CANCEL)
        address = self.host
        self.backend.post_exit(self, None)
        if restart and address is not None:
            self.backend.restart_worker(address)

    def abandon(self) -> None:
        self.kill()

    # --- called by the backend ------------------------------------------------------------

    def assign(self, address: str, pid: int | None) -> None:
        """The slot now runs on ``address`` (it is sent work once it is ready)."""
        with self.lock:
            self.host = address
            self.pid = pid

    def _submit(self, chunk: Chunk, payload: tuple[bytes, list[Any]]) -> None:
        assert self.host is not None, "a slot is sent work only once it has a worker"
        backend = self.backend
        items_blob, buffers = payload
        key = f"conveyor-{backend.token}-{chunk.id}"
        future = backend.client.submit(
            run_pool_chunk,
            backend.token,
            chunk.job.shipped,
            int(chunk.job.mode),
            items_blob,
            buffers,
            key=key,
            pure=False,
            workers=[self.host],
            allow_other_workers=False,
        )
        self.sent[key] = Sent(chunk.id, future)
        future.add_done_callback(lambda _f, key=key: backend.post_done(self, key))

    def deliverable(self) -> list[Sent]:
        """The answered chunks at the head of the queue, in the order they were sent."""
        ready: list[Sent] = []
        with self.lock:
            while self.sent:
                key, head = next(iter(self.sent.items()))
                if head.answer is None:
                    break
                ready.append(self.sent.pop(key))
        return ready

    def idle_and_stopping(self) -> bool:
        with self.lock:
            return self.stopping and not self.sent and not self.exited

    def take_futures(self) -> list[Any]:
        """The worker is gone: forget every chunk it held; return their Dask futures."""
        with self.lock:
            self.exited = True
            futures = [sent.future for sent in self.sent.values()]
            self.sent.clear()
        return futures


__all__ = ["DaskWorker", "Sent"]
