"""``conveyor.Manager``: shared objects in a supervised server process.

The drop-in for ``multiprocessing.Manager()``: the same factory methods, proxies that
pickle to other processes, a context manager that shuts the server down. What differs
is what the stdlib gets wrong: updates that cannot be lost (``incr``, ``apply``,
``compare_and_set``), one ``ManagerGoneError`` instead of a ``BrokenPipeError`` flood
when the server dies, a server that exits with its owner and serves only processes
holding the owner's authkey, and a protocol with one message per request and per reply.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import uuid
from collections.abc import Callable
from multiprocessing import current_process
from multiprocessing.context import BaseContext
from typing import Any

from .._queues._crossing import private_dir
from .._queues._kinds import JoinableQueue
from .._queues._queue import Queue
from .._transport._serialize import LOCAL
from ..errors import ManagerGoneError, describe_exit
from . import _client
from ._protocol import Op
from ._proxies import (
    ArrayProxy,
    BarrierProxy,
    BoundedSemaphoreProxy,
    ConditionProxy,
    DictProxy,
    EventProxy,
    ListProxy,
    LockProxy,
    NamespaceProxy,
    RLockProxy,
    SemaphoreProxy,
    ValueProxy,
    new_proxy,
)
from ._server import serve
from ._stats import ManagerStats

SHUTDOWN_WAIT_S = 5.0  # for the server to exit after it is asked to, before it is killed
SERVER_EXIT_WAIT_S = 1.0  # for a server whose socket closed to be reaped, to say how it ended
_LISTEN_BACKLOG = 128


class Manager:
    """A server process holding shared objects; its factory methods return proxies.

    Started at once unless ``start=False`` (then call ``start()``); ``with`` shuts it
    down. ``ctx`` is the ``multiprocessing`` context the server starts with.

    Example::

        with conveyor.Manager() as manager:
            counts = manager.dict()
            with conveyor.WorkerPool(4) as pool:
                pool.map(count_words, files, counts)   # each task: counts.incr(word)
            print(counts.copy())
    """

    def __init__(self, *, ctx: BaseContext | None = None, start: bool = True) -> None:
        self._ctx: Any = ctx or multiprocessing.get_context()
        self._process: Any = None
        self._client: _client.Client | None = None
        self._owner_pid = 0
        self.address = ""
        if start:
            self.start()

    # --- life -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server process (once)."""
        if self._process is not None:
            raise RuntimeError("this manager's server is already started")
        self._owner_pid = os.getpid()
        self.address = os.path.join(private_dir(), f"manager-{uuid.uuid4().hex[:12]}")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            listener.bind(self.address)
            listener.listen(_LISTEN_BACKLOG)
            authkey = bytes(current_process().authkey)
            self._process = self._ctx.Process(
                target=serve,
                args=(listener, authkey, os.getpid()),
                name="conveyor-manager",
                daemon=True,
            )
            self._process.start()
        finally:
            listener.close()  # the server's now; clients connect by path
        self._client = _client.Client(
            self.address,
            describe_server=f"the manager's server (pid {self._process.pid})",
            how_it_ended=self._how_the_server_ended,
        )
        _client.register(self._client)

    def shutdown(self) -> None:
        """Stop the server (the proxies of every process fail from then on) and wait."""
        process, client = self._process, self._client
        if process is None or client is None or client.gone is not None:
            return
        if os.getpid() != self._owner_pid:
            return  # a child that inherited this object: the server is its owner's
        try:
            client.request(Op.SHUTDOWN)
        except ManagerGoneError:
            pass  # it died first: nothing to ask
        client.gone = f"{client.describe_server} was shut down; its shared objects with it"
        client.close()
        _client.unregister(client)
        process.join(SHUTDOWN_WAIT_S)
        if process.is_alive():
            process.kill()
            process.join()
        try:
            os.unlink(self.address)
        except FileNotFoundError:
            pass

    def join(self, timeout: float | None = None) -> None:
        """Wait for the server process to end."""
        if self._process is not None:
            self._process.join(timeout)

    def __enter__(self) -> Manager:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def statistics(self) -> ManagerStats:
        """What the server reports about itself (objects, clients, requests, refusals)."""
        client = self._started()
        client.give_back_now()  # the proxies this process dropped are not counted
        stats: ManagerStats = client.request(Op.STATS)
        return stats

    def _how_the_server_ended(self) -> str:
        """How the server process ended, in words ("" if it still runs)."""
        process = self._process
        if process is None:
            return ""
        process.join(SERVER_EXIT_WAIT_S)  # its socket closed: it is exiting, or has
        if process.exitcode is None:
            return ""
        return f"it ended with {describe_exit(process.exitcode)}"

    # --- shared objects ---------------------------------------------------------------

    def dict(self, *args: Any, **kwargs: Any) -> DictProxy:
        """A shared ``dict``, made as ``dict(*args, **kwargs)`` would be."""
        proxy: DictProxy = new_proxy(self._started(), "dict", args, kwargs)
        return proxy

    def list(self, sequence: Any = ()) -> ListProxy:
        """A shared ``list`` of ``sequence``."""
        proxy: ListProxy = new_proxy(self._started(), "list", (sequence,), {})
        return proxy

    def Namespace(self, **attributes: Any) -> NamespaceProxy:
        """A shared namespace with ``attributes``."""
        proxy: NamespaceProxy = new_proxy(self._started(), "Namespace", (), attributes)
        return proxy

    def Value(self, typecode: str, value: Any, lock: Any = True) -> ValueProxy:
        """A shared value (``typecode`` is kept but not enforced, as in the stdlib)."""
        proxy: ValueProxy = new_proxy(self._started(), "Value", (typecode, value), {})
        return proxy

    def Array(self, typecode: str, sequence: Any, lock: Any = True) -> ArrayProxy:
        """A shared ``array.array(typecode, sequence)``."""
        proxy: ArrayProxy = new_proxy(self._started(), "Array", (typecode, sequence), {})
        return proxy

    def Lock(self) -> LockProxy:
        """A shared lock, given back at once if the process holding it dies."""
        proxy: LockProxy = new_proxy(self._started(), "Lock", (), {})
        return proxy

    def RLock(self) -> RLockProxy:
        """A shared re-entrant lock, given back if its holder dies or its thread ends."""
        proxy: RLockProxy = new_proxy(self._started(), "RLock", (), {})
        return proxy

    def Semaphore(self, value: int = 1) -> SemaphoreProxy:
        """A shared semaphore; the permits a dead process held are given back."""
        proxy: SemaphoreProxy = new_proxy(self._started(), "Semaphore", (value,), {})
        return proxy

    def BoundedSemaphore(self, value: int = 1) -> BoundedSemaphoreProxy:
        """A shared bounded semaphore."""
        proxy: BoundedSemaphoreProxy = new_proxy(self._started(), "BoundedSemaphore", (value,), {})
        return proxy

    def Condition(self, lock: LockProxy | RLockProxy | None = None) -> ConditionProxy:
        """A shared condition over ``lock`` (a shared Lock or RLock; its own by default)."""
        proxy: ConditionProxy = new_proxy(self._started(), "Condition", (lock,), {})
        return proxy

    def Event(self) -> EventProxy:
        """A shared event."""
        proxy: EventProxy = new_proxy(self._started(), "Event", (), {})
        return proxy

    def Barrier(
        self, parties: int, action: Callable[[], Any] | None = None, timeout: float | None = None
    ) -> BarrierProxy:
        """A shared barrier; ``action`` runs in the server when it trips. A party that
        dies while waiting breaks it."""
        pickled = LOCAL.dumps_function(action) if action is not None else None
        args = (parties, pickled, timeout)
        proxy: BarrierProxy = new_proxy(self._started(), "Barrier", args, {})
        return proxy

    def Queue(self, maxsize: int = 0) -> Queue[Any]:
        """A ``conveyor.Queue``: it needs no server, and ends when its producers do."""
        return Queue(maxsize)

    def JoinableQueue(self, maxsize: int = 0) -> JoinableQueue[Any]:
        """A ``conveyor.JoinableQueue``."""
        return JoinableQueue(maxsize)

    def _started(self) -> _client.Client:
        if self._client is None:
            raise RuntimeError("this manager's server is not started: call start()")
        return self._client

    # --- what CPython's own tests call ------------------------------------------------

    def _number_of_objects(self) -> int:
        return self.statistics().objects

    def _debug_info(self) -> str:
        return repr(self.statistics())

    def __repr__(self) -> str:
        pid = self._process.pid if self._process is not None else None
        return f"<conveyor.Manager server pid={pid} address={self.address!r}>"


__all__ = ["Manager"]
