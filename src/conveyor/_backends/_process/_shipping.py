"""Ship each function once per worker: the parent's registry and each worker's table.

A task's function is pickled once per pool (``FunctionRegistry``), sent to a worker the
first time that worker needs it, and named by a small integer id after that. The worker
keeps the functions it was sent in a bounded table; the parent keeps a mirror of each
worker's table, touched in the same order (the socket is FIFO), so both evict the same
entry and the parent always knows whether a worker still holds a function.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from ..._identity import IdentityCache

# How many distinct functions a worker remembers.
FUNCTION_TABLE_SIZE = 64


class Shipped(NamedTuple):
    """A function ready to ship: its id in the registry, and its pickle."""

    id: int
    data: bytes


class FunctionTable:
    """A bounded LRU of functions keyed by a small integer id.

    The worker keeps one (id -> function); the parent keeps one per worker (id -> True) as
    a mirror. Both are touched in the same order (the channel is FIFO) so they evict alike.
    """

    def __init__(self, size: int = FUNCTION_TABLE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[int, Any] = OrderedDict()

    def get(self, key: int) -> Any:
        value = self._entries[key]
        self._entries.move_to_end(key)
        return value

    def __contains__(self, key: int) -> bool:
        return key in self._entries

    def touch(self, key: int) -> bool:
        """Mark ``key`` used; return False (and do nothing) if it is not held."""
        if key not in self._entries:
            return False
        self._entries.move_to_end(key)
        return True

    def put(self, key: int, value: Any) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class FunctionRegistry:
    """Parent side: gives each distinct callable an id and pickles it once.

    It never keeps a task's callable, or the object a bound method holds, alive after
    its jobs are done (see ``IdentityCache``).
    """

    def __init__(self, size: int = 4 * FUNCTION_TABLE_SIZE) -> None:
        self._shipped: IdentityCache[Shipped] = IdentityCache(size)
        self._next_id = 0

    def register(self, fn: Callable[..., Any], dump: Callable[[Any], bytes]) -> Shipped:
        """The callable's id and what ``dump`` made of it (made once per callable)."""
        shipped = self._shipped.get(fn)
        if shipped is None:
            self._next_id += 1
            shipped = Shipped(self._next_id, dump(fn))
            self._shipped.put(fn, shipped)
        return shipped


__all__ = ["FUNCTION_TABLE_SIZE", "FunctionRegistry", "FunctionTable", "Shipped"]
