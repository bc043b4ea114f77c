"""The objects a manager's server holds, what each type lets a client call, and when
each object is freed.

An object lives while some process holds a proxy of it or another shared object
refers to it. The server counts, per object, the proxies it handed to each process
(``hold``); a process gives its count back when its last proxy of the object is gone
(``drop``), or all at once when it dies. A shared object stored inside another (a dict
in a list) is held by a ``Ref`` there, a stand-in the server's own unpickling makes, so
clearing the list frees the dict once no process holds it either.

Counting proxies handed out, rather than a yes/no per process, lets clients give
counts back late and on any connection: a process only gives back what it has
already been given, so a count can never fall below the proxies alive.
"""

from __future__ import annotations

import array
import collections
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from .._transport._serialize import load_function
from ._rates import RateLimit
from ._sync import SYNC_KINDS, Lock, Semaphore, SyncObject
from ._waits import Caller

ITERATOR_BATCH = 256  # items an iterator proxy fetches per round trip


class Namespace:
    """``Manager().Namespace()``: attributes, shown in order of their names."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    def __repr__(self) -> str:
        shown = sorted(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"Namespace({', '.join(shown)})"


class Value:
    """``Manager().Value(typecode, value)``: one value (the typecode is kept, not enforced,
    as in ``multiprocessing``)."""

    def __init__(self, typecode: str, value: Any, lock: Any = True) -> None:
        self.typecode = typecode
        self.value = value

    def get(self) -> Any:
        return self.value

    def set(self, value: Any) -> None:
        self.value = value

    def incr(self, by: Any = 1) -> Any:
        self.value += by
        return self.value

    def apply(self, fn: bytes) -> Any:
        self.value = load_function(fn)(self.value)
        return self.value

    def compare_and_set(self, expected: Any, new: Any) -> bool:
        if self.value != expected:
            return False
        self.value = new
        return True


_MISSING = object()


class Dict(dict[Any, Any], SyncObject):
    """A shared dict: a ``dict`` with the updates no client can interleave, and a lock
    per key (made on first use, dropped once free), given back if its holder dies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_locks: dict[Any, Lock] = {}

    def lock_acquire(self, caller: Caller, key: Any, timeout: Any = None) -> Any:
        lock = self.key_locks.get(key)
        if lock is None:
            lock = self.key_locks[key] = Lock()
        return lock.acquire(caller, True, -1 if timeout is None else timeout)

    def lock_release(self, caller: Caller, key: Any) -> None:
        lock = self.key_locks.get(key)
        if lock is None:
            raise RuntimeError(f"the lock of key {key!r} is not held")
        lock.release(caller)
        self._forget_if_free(key, lock)

    def _forget_if_free(self, key: Any, lock: Lock) -> None:
        if not lock.count and not lock.waiters:
            self.key_locks.pop(key, None)

    def process_died(self, pid: int) -> str:
        given_back = []
        for key, lock in list(self.key_locks.items()):
            if lock.process_died(pid):
                given_back.append(repr(key))
                self._forget_if_free(key, lock)
        return f"the lock of key {', '.join(given_back)}" if given_back else ""

    def incr(self, key: Any, by: Any = 1, default: Any = 0) -> Any:
        value = self[key] = self.get(key, default) + by
        return value

    def apply(self, key: Any, fn: bytes, default: Any = _MISSING) -> Any:
        if key in self:
            old = self[key]
        elif default is _MISSING:
            raise KeyError(key)
        else:
            old = default
        value = self[key] = load_function(fn)(old)
        return value

    def compare_and_set(self, key: Any, expected: Any, new: Any) -> bool:
        if self.get(key, _MISSING) != expected:
            return False
        self[key] = new
        return True


class List(list[Any]):
    """A shared list: a ``list`` with the updates no client can interleave."""

    def apply(self, index: int, fn: bytes) -> Any:
        value = self[index] = load_function(fn)(self[index])
        return value

    def compare_and_set(self, index: int, expected: Any, new: Any) -> bool:
        if self[index] != expected:
            return False
        self[index] = new
        return True


class BatchIterator:
    """The server's side of iterating a shared dict or list: items go out in batches,
    and an error the iteration raises (a dict changed size) reaches the client."""

    def __init__(self, iterator: Iterator[Any]) -> None:
        self._iterator = iterator

    def next_batch(self) -> list[Any]:
        return list(itertools.islice(self._iterator, ITERATOR_BATCH))


def _array(typecode: str, sequence: Any = (), lock: Any = True) -> array.array[Any]:
    return array.array(typecode, sequence)


# The methods of dict and list a proxy forwards as they are (``_proxies.py``), and with
# them what else a client may call on each.
DICT_FORWARDED = [
    "__contains__",
    "__delitem__",
    "__len__",
    "clear",
    "copy",
    "get",
    "items",
    "keys",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "values",
]
LIST_FORWARDED = [
    "__add__",
    "__contains__",
    "__delitem__",
    "__getitem__",
    "__len__",
    "__mul__",
    "__rmul__",
    "__setitem__",
    "append",
    "count",
    "extend",
    "index",
    "insert",
    "pop",
    "remove",
    "reverse",
    "sort",
]
_DICT_METHODS = frozenset(DICT_FORWARDED) | {
    "__getitem__",
    "__setitem__",
    "__iter__",
    "__repr__",
    "incr",
    "apply",
    "compare_and_set",
    "lock_acquire",
    "lock_release",
}
_LIST_METHODS = frozenset(LIST_FORWARDED) | {
    "__iter__",
    "__iadd__",
    "__imul__",
    "__repr__",
    "apply",
    "compare_and_set",
}


class Kind:
    """A type a client may create: how the server makes it and what may be called.

    ``sync``: a primitive whose methods take the caller first and may wait (``_sync``).
    """

    def __init__(
        self, make: Callable[..., Any], methods: frozenset[str], sync: bool = False
    ) -> None:
        self.make = make
        self.methods = methods
        self.sync = sync


KINDS: dict[str, Kind] = {
    "dict": Kind(Dict, _DICT_METHODS),
    "list": Kind(List, _LIST_METHODS),
    "Namespace": Kind(
        Namespace, frozenset({"__getattribute__", "__setattr__", "__delattr__", "__repr__"})
    ),
    "Value": Kind(Value, frozenset({"get", "set", "incr", "apply", "compare_and_set"})),
    "Array": Kind(_array, frozenset({"__len__", "__getitem__", "__setitem__", "__repr__"})),
    "Iterator": Kind(BatchIterator, frozenset({"next_batch"})),
}
for _typeid, (_make, _methods) in SYNC_KINDS.items():
    KINDS[_typeid] = Kind(_make, _methods, sync=True)
KINDS["CapacityLimit"] = Kind(Semaphore, Semaphore.methods, sync=True)
KINDS["RateLimit"] = Kind(RateLimit, RateLimit.methods, sync=True)


class Entry:
    """One shared object and who holds it."""

    __slots__ = ("holds", "kind", "obj", "refs", "typeid")

    def __init__(self, obj: Any, typeid: str) -> None:
        self.obj = obj
        self.typeid = typeid
        self.kind = KINDS[typeid]
        self.holds: collections.Counter[int] = collections.Counter()  # pid -> proxies
        self.refs = 0  # Refs to it inside other shared objects


class Table:
    """Every object of one server, by id, with its holders."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self._ids = itertools.count(1)
        self._held_by: dict[int, set[int]] = collections.defaultdict(set)  # pid -> oids
        self._freeing = False
        self._to_free: collections.deque[int] = collections.deque()

    def add(self, obj: Any, typeid: str) -> int:
        oid = next(self._ids)
        self.entries[oid] = Entry(obj, typeid)
        return oid

    def hold(self, oid: int, pid: int, count: int = 1) -> None:
        self.entries[oid].holds[pid] += count
        self._held_by[pid].add(oid)

    def drop(self, oid: int, pid: int, count: int) -> None:
        entry = self.entries.get(oid)
        if entry is None:
            return
        entry.holds[pid] -= count
        if entry.holds[pid] <= 0:
            del entry.holds[pid]
            self._held_by[pid].discard(oid)
        self._maybe_free(oid, entry)

    def drop_process(self, pid: int) -> int:
        """Every hold of a process that died; returns how many objects it held."""
        oids = self._held_by.pop(pid, set())
        for oid in oids:
            entry = self.entries.get(oid)
            if entry is not None:
                entry.holds.pop(pid, None)
                self._maybe_free(oid, entry)
        return len(oids)

    def add_ref(self, oid: int) -> None:
        self.entries[oid].refs += 1

    def remove_ref(self, oid: int) -> None:
        entry = self.entries.get(oid)
        if entry is not None:
            entry.refs -= 1
            self._maybe_free(oid, entry)

    def _maybe_free(self, oid: int, entry: Entry) -> None:
        if entry.holds or entry.refs > 0:
            return
        self._to_free.append(oid)
        if self._freeing:
            return  # a free in progress (a container dropping its Refs) takes it
        # Iteratively: freeing a list of a million nested dicts must not recurse.
        self._freeing = True
        try:
            while self._to_free:
                freed = self.entries.pop(self._to_free.popleft(), None)
                del freed  # its Refs, if any, are released here and queue their objects
        finally:
            self._freeing = False


# Methods of a non-sync kind that take the caller first (and may wait).
CALLER_METHODS = frozenset({"lock_acquire", "lock_release"})

__all__ = [
    "CALLER_METHODS",
    "DICT_FORWARDED",
    "KINDS",
    "LIST_FORWARDED",
    "Dict",
    "Entry",
    "Kind",
    "List",
    "Namespace",
    "Table",
    "Value",
]
