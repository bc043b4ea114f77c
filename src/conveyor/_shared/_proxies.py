"""Proxies: what a process holds of a shared object, forwarding each call to the server.

They pickle to other processes (``multiprocessing`` children, conveyor's pool tasks) as
their server's address and the object's id; the process that unpickles one connects
with its own authkey. ``_callmethod(name, args, kwds)`` is the stdlib's documented way
to call any method of the referent, and works here too.

The atomic operations (``incr``, ``apply``, ``compare_and_set``, ``setdefault``) each
run in the server in one step, so no other client's update can come between the read
and the write, which ``d[k] += 1`` (a get, then a set) cannot promise.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from .._transport._serialize import LOCAL
from ._client import Client, client_for
from ._objects import DICT_FORWARDED, LIST_FORWARDED
from ._refs import rebuild_proxy

_MISSING: Any = object()  # pickles as itself only within one process: never sent


class BaseProxy:
    """A handle on one shared object in a manager's server."""

    _typeid: ClassVar[str] = ""
    _client: Client
    _oid: int

    def __init__(self, client: Client, oid: int) -> None:
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_oid", oid)
        weakref.finalize(self, client.forget, oid)

    def _callmethod(
        self, methodname: str, args: tuple[Any, ...] = (), kwds: dict[str, Any] | None = None
    ) -> Any:
        """Call ``methodname`` of the shared object in the server and return the result."""
        return self._client.call(self._oid, methodname, tuple(args), kwds or {})

    def __reduce__(self) -> Any:
        self._client.pin(self._oid)
        return rebuild_proxy, (self._client.address, self._oid, self._typeid, False)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object, typeid {self._typeid!r} at {id(self):#x}>"

    def __str__(self) -> str:
        return str(self._callmethod("__repr__"))


def _forward(name: str) -> Callable[..., Any]:
    def method(self: BaseProxy, *args: Any, **kwargs: Any) -> Any:
        return self._client.call(self._oid, name, args, kwargs)

    method.__name__ = name
    method.__doc__ = f"``{name}`` of the shared object, run in the server."
    return method


class _Iterates(BaseProxy):
    def __iter__(self) -> Iterator[Any]:
        iterator: IteratorProxy = self._callmethod("__iter__")
        return iterator


class DictProxy(_Iterates):
    """A shared ``dict``. Besides the dict methods, updates that cannot be lost.

    Example::

        counts = manager.dict()
        counts.incr("seen")                    # atomic: 8 processes lose no update
        counts.apply("max", lambda old: max(old, 7), default=0)
    """

    _typeid = "dict"

    def __getitem__(self, key: Any) -> Any:
        return self._client.call(self._oid, "__getitem__", (key,), {})

    def __setitem__(self, key: Any, value: Any) -> None:
        self._client.call(self._oid, "__setitem__", (key, value), {})

    def incr(self, key: Any, by: Any = 1, default: Any = 0) -> Any:
        """``d[key] = d.get(key, default) + by`` in one step; returns the new value."""
        return self._client.call(self._oid, "incr", (key, by, default), {})

    def apply(self, key: Any, fn: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        """``d[key] = fn(d[key])`` in one step (``fn(default)`` if the key is missing and
        a default is given; ``KeyError`` otherwise); returns the new value. ``fn`` runs in
        the server, so keep it quick: every other client waits meanwhile."""
        args = (key, LOCAL.dumps_function(fn))
        return self._callmethod("apply", args if default is _MISSING else (*args, default))

    def compare_and_set(self, key: Any, expected: Any, new: Any) -> bool:
        """Set ``d[key] = new`` if it equals ``expected`` now (a missing key equals
        nothing); True if it did."""
        return bool(self._callmethod("compare_and_set", (key, expected, new)))

    def lock(self, key: Any, timeout: float | None = None) -> KeyLock:
        """The lock of ``key``, for a longer update than one method: ``with d.lock(k):``.
        Given back if the process holding it dies. It only excludes other holders of the
        same key's lock, not plain ``d[k] = v`` from elsewhere."""
        return KeyLock(self, key, timeout)


class KeyLock:
    """``with d.lock(key):`` (see ``DictProxy.lock``); ``TimeoutError`` past ``timeout``."""

    def __init__(self, proxy: DictProxy, key: Any, timeout: float | None) -> None:
        self._proxy, self._key, self._timeout = proxy, key, timeout

    def __enter__(self) -> KeyLock:
        if not self._proxy._callmethod("lock_acquire", (self._key, self._timeout)):
            raise TimeoutError(f"the lock of key {self._key!r} was not free within the timeout")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._proxy._callmethod("lock_release", (self._key,))


for _name in DICT_FORWARDED:
    setattr(DictProxy, _name, _forward(_name))


class ListProxy(_Iterates):
    """A shared ``list``, with ``apply(index, fn)`` and ``compare_and_set`` as for dicts."""

    _typeid = "list"

    def __iadd__(self, other: Any) -> ListProxy:
        self._callmethod("extend", (other,))
        return self

    def __imul__(self, times: int) -> ListProxy:
        self._callmethod("__imul__", (times,))
        return self

    def apply(self, index: int, fn: Callable[[Any], Any]) -> Any:
        """``l[index] = fn(l[index])`` in one step; returns the new value."""
        return self._callmethod("apply", (index, LOCAL.dumps_function(fn)))

    def compare_and_set(self, index: int, expected: Any, new: Any) -> bool:
        """Set ``l[index] = new`` if it equals ``expected`` now; True if it did."""
        return bool(self._callmethod("compare_and_set", (index, expected, new)))

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._callmethod("__getitem__", (slice(None),)))


for _name in LIST_FORWARDED:
    setattr(ListProxy, _name, _forward(_name))


class NamespaceProxy(BaseProxy):
    """A shared namespace: attributes live in the server, except those starting with
    ``_``, which stay on this proxy (as in ``multiprocessing``)."""

    _typeid = "Namespace"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        return self._callmethod("__getattribute__", (name,))

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._callmethod("__setattr__", (name, value))

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            object.__delattr__(self, name)
        else:
            self._callmethod("__delattr__", (name,))


class ValueProxy(BaseProxy):
    """A shared value: ``.value``, ``get()``, ``set()``, and the atomic ``incr``,
    ``apply`` and ``compare_and_set``."""

    _typeid = "Value"

    def get(self) -> Any:
        return self._client.call(self._oid, "get", (), {})

    def set(self, value: Any) -> None:
        self._client.call(self._oid, "set", (value,), {})

    value = property(get, set)

    def incr(self, by: Any = 1) -> Any:
        """Add ``by`` in one step; returns the new value."""
        return self._client.call(self._oid, "incr", (by,), {})

    def apply(self, fn: Callable[[Any], Any]) -> Any:
        """Replace the value with ``fn(value)`` in one step; returns the new value."""
        return self._callmethod("apply", (LOCAL.dumps_function(fn),))

    def compare_and_set(self, expected: Any, new: Any) -> bool:
        """Set ``new`` if the value equals ``expected`` now; True if it did."""
        return bool(self._callmethod("compare_and_set", (expected, new)))


class ArrayProxy(BaseProxy):
    """A shared ``array.array``: ``len``, indexing and slices."""

    _typeid = "Array"


for _name in ("__len__", "__getitem__", "__setitem__"):
    setattr(ArrayProxy, _name, _forward(_name))


class AcquirerProxy(BaseProxy):
    """A shared lock or semaphore: ``acquire``, ``release`` and ``with``. Whatever a
    process holds is given back the moment it dies (and logged with its pid)."""

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        args = (blocking,) if timeout is None else (blocking, timeout)
        return bool(self._client.call(self._oid, "acquire", args, {}))

    def release(self) -> None:
        self._client.call(self._oid, "release", (), {})

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class LockProxy(AcquirerProxy):
    """A shared ``threading.Lock``: any process may release it."""

    _typeid = "Lock"

    def locked(self) -> bool:
        return bool(self._callmethod("locked"))


class RLockProxy(AcquirerProxy):
    """A shared ``threading.RLock``: owned by the thread that acquired it."""

    _typeid = "RLock"


class SemaphoreProxy(AcquirerProxy):
    """A shared ``threading.Semaphore``; ``get_value()`` says how many permits are free."""

    _typeid = "Semaphore"

    def release(self, n: int = 1) -> None:
        self._client.call(self._oid, "release", (n,), {})

    def get_value(self) -> int:
        return int(self._callmethod("get_value"))


class BoundedSemaphoreProxy(SemaphoreProxy):
    """A shared ``threading.BoundedSemaphore``."""

    _typeid = "BoundedSemaphore"


class EventProxy(BaseProxy):
    """A shared ``threading.Event``."""

    _typeid = "Event"

    def is_set(self) -> bool:
        return bool(self._callmethod("is_set"))

    def set(self) -> None:
        self._callmethod("set")

    def clear(self) -> None:
        self._callmethod("clear")

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._callmethod("wait", (timeout,)))


class ConditionProxy(AcquirerProxy):
    """A shared ``threading.Condition``."""

    _typeid = "Condition"

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._callmethod("wait", (timeout,)))

    def notify(self, n: int = 1) -> None:
        self._callmethod("notify", (n,))

    def notify_all(self) -> None:
        self._callmethod("notify_all")

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (it runs here, with the lock held)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (result := predicate()):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self.wait(left)
        return result


class BarrierProxy(BaseProxy):
    """A shared ``threading.Barrier``. A party that dies while waiting breaks it."""

    _typeid = "Barrier"

    def wait(self, timeout: float | None = None) -> int:
        return int(self._callmethod("wait", (timeout,)))

    def abort(self) -> None:
        self._callmethod("abort")

    def reset(self) -> None:
        self._callmethod("reset")

    @property
    def parties(self) -> int:
        return int(self._callmethod("parties"))

    @property
    def n_waiting(self) -> int:
        return int(self._callmethod("n_waiting"))

    @property
    def broken(self) -> bool:
        return bool(self._callmethod("broken"))


class IteratorProxy(BaseProxy):
    """Iterating a shared dict or list: items come from the server in batches."""

    _typeid = "Iterator"
    _batch: list[Any]

    def __init__(self, client: Client, oid: int) -> None:
        super().__init__(client, oid)
        object.__setattr__(self, "_batch", [])

    def __iter__(self) -> IteratorProxy:
        return self

    def __next__(self) -> Any:
        batch: list[Any] = self._batch
        if not batch:
            batch.extend(reversed(self._callmethod("next_batch")))
            if not batch:
                raise StopIteration
        return batch.pop()


class CapacityLimitProxy(BaseProxy):
    """What a ``conveyor.CapacityLimiter`` holds."""

    _typeid = "CapacityLimit"


class RateLimitProxy(BaseProxy):
    """What a ``conveyor.RateLimiter`` holds."""

    _typeid = "RateLimit"


PROXY_TYPES: dict[str, type[BaseProxy]] = {
    cls._typeid: cls
    for cls in (
        DictProxy,
        ListProxy,
        NamespaceProxy,
        ValueProxy,
        ArrayProxy,
        IteratorProxy,
        LockProxy,
        RLockProxy,
        SemaphoreProxy,
        BoundedSemaphoreProxy,
        EventProxy,
        ConditionProxy,
        BarrierProxy,
        CapacityLimitProxy,
        RateLimitProxy,
    )
}


def adopt(address: str, oid: int, typeid: str, counted: bool) -> BaseProxy:
    """The proxy an unpickled one becomes in this process (``_refs.rebuild_proxy``)."""
    client = client_for(address)
    proxy = PROXY_TYPES[typeid](client, oid)
    client.adopt(oid, counted)
    return proxy


def new_proxy(client: Client, typeid: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Create a shared object of ``typeid`` and return this process's proxy of it."""
    return PROXY_TYPES[typeid](client, client.create(typeid, args, kwargs))


__all__ = [
    "PROXY_TYPES",
    "AcquirerProxy",
    "ArrayProxy",
    "BarrierProxy",
    "BaseProxy",
    "BoundedSemaphoreProxy",
    "ConditionProxy",
    "DictProxy",
    "EventProxy",
    "IteratorProxy",
    "ListProxy",
    "LockProxy",
    "NamespaceProxy",
    "RLockProxy",
    "SemaphoreProxy",
    "ValueProxy",
    "adopt",
    "new_proxy",
]
