"""What a chunk's Dask task carries: the function and the arguments, pickled here.

Both are pickled by conveyor (cloudpickle, so ``__main__`` code and lambdas travel by
value), not by Dask: a chunk travels as one ``bytes`` Dask need not look into, and a
task that cannot be pickled is found out here, item by item, as with local processes.
Anything big goes to the cluster once (``Client.scatter``) and every task carries a
reference: a function of 1 MiB or more (a closure over an array), once per function;
an argument's buffer of 1 MiB or more (a NumPy array), once per array object.
"""

from __future__ import annotations

import pickle
import weakref
from typing import Any

import cloudpickle

from ..._engine._jobs import Chunk
from ..._identity import IdentityCache
from ..._transport._serialize import add_note
from ...errors import EncodeError, describe_callable
from ._cluster import RPC_TIMEOUT_S

SCATTER_MIN_BYTES = 1 << 20


class Shipping:
    """Pickles and scatters for one pool; remembers what it scattered, weakly."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._functions: IdentityCache[Any] = IdentityCache(256)  # fn -> pickle or future
        self._buffers: IdentityCache[Any] = IdentityCache(64)  # array -> its future

    def function(self, fn: Any) -> Any:
        """``fn`` pickled (``bytes``), or the future of its scattered pickle if big."""
        shipped = self._functions.get(fn)
        if shipped is None:
            try:
                blob = cloudpickle.dumps(fn, protocol=5)
            except Exception as exc:
                add_note(exc, f"conveyor: cannot pickle the function {describe_callable(fn)}")
                raise
            shipped = self._scatter(blob) if len(blob) >= SCATTER_MIN_BYTES else blob
            self._functions.put(fn, shipped)
        return shipped

    def items(self, chunk: Chunk) -> tuple[bytes, list[Any]]:
        """A chunk's arguments pickled, and the futures of their big buffers, in order.

        Raises ``EncodeError`` naming the items that cannot be pickled.
        """
        big: list[pickle.PickleBuffer] = []

        def keep_big(buffer: pickle.PickleBuffer) -> bool:
            if buffer.raw().nbytes < SCATTER_MIN_BYTES:
                return True  # in band
            big.append(buffer)
            return False

        try:
            blob = cloudpickle.dumps(chunk.items, protocol=5, buffer_callback=keep_big)
        except Exception as exc:
            raise EncodeError(_find_unpicklable(chunk, exc)) from None
        return blob, [self._scatter_buffer(buffer) for buffer in big]

    def forget(self) -> None:
        """Let the cluster free what was scattered (the pool is closing)."""
        self._functions = IdentityCache(256)
        self._buffers = IdentityCache(64)

    def _scatter(self, blob: bytes) -> Any:
        return self._client.scatter(blob, hash=False, timeout=RPC_TIMEOUT_S)

    def _scatter_buffer(self, buffer: pickle.PickleBuffer) -> Any:
        """Scatter a buffer once per object it belongs to (the same array, many tasks).

        Only an owner that can be weakly referenced (a NumPy array) is remembered: its
        scattered copy is forgotten with it. Others (``bytes``) are scattered each time.
        """
        view = buffer.raw()
        owner = view.obj
        remember = _weakly_referable(owner)
        known = self._buffers.get(owner) if remember else None
        if known is None:
            known = self._scatter(bytes(view))
            if remember:
                self._buffers.put(owner, known)
        return known


def _weakly_referable(obj: object) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def _find_unpicklable(chunk: Chunk, first_error: BaseException) -> dict[int, BaseException]:
    failures: dict[int, BaseException] = {}
    what = describe_callable(chunk.job.fn)
    for pos, item in enumerate(chunk.items):
        try:
            cloudpickle.dumps(item, protocol=5)
        except Exception as exc:
            failures[pos] = add_note(
                exc,
                f"conveyor: cannot pickle the arguments of task {chunk.indices[pos]} of {what}",
            )
    return failures or {-1: first_error}


__all__ = ["SCATTER_MIN_BYTES", "Shipping"]
