"""``IdentityCache``: a bounded LRU keyed by object identity, holding keys weakly.

The engine remembers things about the functions it has run (their pickle, how long a
call takes) without keeping them alive: an entry holds its key by weak reference where
the object allows (functions, most callables), and a dead key removes its entry, so
``id()`` cannot be reused while the entry lives. Objects that refuse weak references
(builtins) are held strongly; they live forever anyway.

Example::

    cache: IdentityCache[bytes] = IdentityCache(256)
    data = cache.get(fn)
    if data is None:
        cache.put(fn, data := pickle.dumps(fn))
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class IdentityCache(Generic[V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[int, tuple[Callable[[], Any], V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, obj: object) -> V | None:
        key = id(obj)
        entry = self._entries.get(key)
        if entry is None or entry[0]() is not obj:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, obj: object, value: V) -> None:
        key = id(obj)
        entry = self._entries.get(key)
        # The same object again (every call of a function updates its estimate): keep
        # its reference, which costs a weakref and a closure to make.
        ref = entry[0] if entry is not None and entry[0]() is obj else self._reference(obj, key)
        self._entries[key] = (ref, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def _reference(self, obj: object, key: int) -> Callable[[], Any]:
        entries = self._entries

        def forget(ref: object) -> None:
            entry = entries.get(key)
            if entry is not None and entry[0] is ref:  # not a newer object with this id
                del entries[key]

        try:
            return weakref.ref(obj, forget)
        except TypeError:
            return lambda: obj


__all__ = ["IdentityCache"]
