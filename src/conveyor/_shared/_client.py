"""A process's side of one manager: a connection per thread, and the proxies it holds.

Each thread gets its own connection on its first request, so a thread waiting on the
server never holds up another. A forked child drops the connections it inherited
(they are its parent's) and asks the server to count the proxies it inherited before
its first request. The server's death is one error, ``ManagerGoneError``, raised by
every request from then on, at once.

Proxies are counted here (``live``: alive in this process; ``counted``: handed to it by
the server and not yet given back). A proxy's death only appends to a deque, which is
safe in a garbage collector callback on any thread; the counts settle at the next
request, which gives back the server's count of an object whose last proxy is gone.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import weakref
from collections.abc import Callable
from multiprocessing import current_process
from typing import Any

from ..errors import AccessRefusedError, ManagerGoneError
from ._protocol import CHALLENGE_BYTES, WELCOME, Op, Receiver, Status, answer, send_message


class _Connection:
    """One thread's connection: closed when the thread ends (its thread-local goes),
    which the server reads as the end of that thread's hold on an ``RLock``."""

    __slots__ = ("__weakref__", "receiver", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.receiver = Receiver()
        # Not at exit: weakref's exit hook would close it before the default manager's
        # own (registered earlier, so run later) asks the server to shut down through it.
        weakref.finalize(self, sock.close).atexit = False


class Client:
    """This process's connections to one server and its count of the proxies it holds."""

    def __init__(
        self, address: str, describe_server: str = "", how_it_ended: Callable[[], str] | None = None
    ) -> None:
        self.address = address
        self.describe_server = describe_server or f"the manager at {address}"
        self._how_it_ended = how_it_ended  # the owner can say (it is the server's parent)
        self.gone: str | None = None  # why every request now fails
        self._pid = os.getpid()
        self._local = threading.local()
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.live: collections.Counter[int] = collections.Counter()
        self.counted: collections.Counter[int] = collections.Counter()
        self._pinned: set[int] = set()  # pickled by this process: held while it lives
        self._to_return: dict[int, int] = {}
        self._dead: collections.deque[int] = collections.deque()  # proxies gone since
        self._to_hold: set[int] = set()  # inherited by a fork, not yet counted for us

    # --- requests ---------------------------------------------------------------------

    def call(self, oid: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self.request(Op.CALL, oid, method, args, kwargs)

    def create(self, typeid: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        oid: int = self.request(Op.CREATE, typeid, args, kwargs)
        with self._lock:
            self.counted[oid] += 1
            self.live[oid] += 1
        return oid

    def request(self, op: Op, *fields: Any) -> Any:
        """Send one request and return its result (or raise what the server raised)."""
        connection = self._connection()
        returned = self._returns() if op in (Op.CALL, Op.CREATE) else ()
        if op in (Op.CALL, Op.CREATE):
            fields = (*fields, returned)
        sent = False
        _sending.to = self
        try:
            send_message(connection.sock, (op, *fields))
            sent = True
            status, value = connection.receiver.receive(connection.sock)
        except (EOFError, ConnectionError) as exc:
            raise self._lost(exc) from None
        except BaseException:
            if sent:
                # Interrupted (Ctrl-C) while the server may still answer: tell it, so that
                # a wait is withdrawn or what it granted is given back; read up to that.
                self._abandon(connection)
            else:
                self._take_back(returned)  # not sent (an argument did not pickle)
            raise
        finally:
            _sending.to = None
        if status == Status.RAISED:
            raise value
        return value

    def _abandon(self, connection: _Connection) -> None:
        try:
            send_message(connection.sock, (Op.ABANDON,))
            while connection.receiver.receive(connection.sock)[0] != Status.ABANDONED:
                pass  # the reply it gave up on
        except BaseException:  # the interrupt the caller raises matters more than this
            self._local.connection = None  # out of step: the next request reconnects
            connection.sock.close()

    def give_back_now(self) -> None:
        """Send the counts of the proxies gone since the last request (not waiting for
        the next one), so that the server's count of objects is exact."""
        returned = self._returns()
        if returned:
            self.request(Op.RELEASE, returned)

    def _take_back(self, returned: tuple[tuple[int, int], ...]) -> None:
        """Counts taken for a request that was never sent: they go with the next one."""
        with self._lock:
            for oid, count in returned:
                self._to_return[oid] = self._to_return.get(oid, 0) + count

    def _returns(self) -> tuple[tuple[int, int], ...]:
        """The counts to give back with this request (objects whose last proxy died)."""
        if not self._dead and not self._to_return:
            return ()
        with self._lock:
            self._settle_dead()
            returned = tuple((oid, n) for oid, n in self._to_return.items() if n)
            self._to_return = {}
        return returned

    def _settle_dead(self) -> None:
        while self._dead:
            oid = self._dead.popleft()
            self.live[oid] -= 1
            if self.live[oid] > 0:
                continue
            del self.live[oid]
            count = self.counted.pop(oid, 0)
            if count and oid not in self._pinned:
                self._to_return[oid] = self._to_return.get(oid, 0) + count
            elif count:
                self.counted[oid] = count

    # --- proxies ----------------------------------------------------------------------

    def adopt(self, oid: int, counted: bool) -> None:
        """A new proxy of ``oid`` in this process; ``counted``: the server counted it."""
        with self._lock:
            self._settle_dead()
            if counted:
                self.counted[oid] += 1
            elif not self.counted[oid]:
                if self._to_return.get(oid):  # not given back yet: keep one instead
                    self._to_return[oid] -= 1
                    self.counted[oid] = 1
                else:
                    self._to_hold.add(oid)
            self.live[oid] += 1
        if self._to_hold:
            self._hold_now()

    def forget(self, oid: int) -> None:
        """A proxy of ``oid`` was garbage collected (called from its finalizer)."""
        self._dead.append(oid)

    def pin(self, oid: int) -> None:
        """A proxy of ``oid`` is being pickled: hold it as long as this process lives,
        so that it exists when the process that unpickles it asks for it. Not when the
        pickle is a request to the server itself, which holds what it stores at once."""
        if _sending.to is not self:
            self._pinned.add(oid)

    def _hold_now(self) -> None:
        with self._lock:
            oids, self._to_hold = tuple(self._to_hold), set()
        if not oids:
            return
        held: tuple[int, ...] = self.request(Op.HOLD, oids)  # those that still exist
        with self._lock:
            for oid in held:
                self.counted[oid] += 1

    # --- connections ------------------------------------------------------------------

    def _connection(self) -> _Connection:
        if self._pid != os.getpid():
            self._after_fork()
        if self.gone is not None:
            raise ManagerGoneError(self.gone)
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    def _connect(self) -> _Connection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(self.address)
            challenge = sock.recv(CHALLENGE_BYTES)
            if not challenge:
                raise EOFError
            sock.sendall(answer(bytes(current_process().authkey), challenge))
            verdict = sock.recv(16)
        except (OSError, EOFError) as exc:
            sock.close()
            raise self._lost(exc) from None
        if verdict != WELCOME:
            sock.close()
            raise AccessRefusedError(
                f"{self.describe_server} refused this process (pid {os.getpid()}), which "
                "does not hold its owner's multiprocessing authkey; only processes the "
                "owner started (or that were given its key) may use its shared objects"
            )
        connection = _Connection(sock)
        with self._lock:
            self._connections.add(connection)
        return connection

    def _lost(self, exc: BaseException) -> ManagerGoneError:
        if self.gone is None:
            ended = self._how_it_ended() if self._how_it_ended is not None else ""
            how = ended or f"{type(exc).__name__}: {exc}"
            self.gone = f"{self.describe_server} is gone ({how}); its shared objects went with it"
        return ManagerGoneError(self.gone)

    def _after_fork(self) -> None:
        """In a forked child: the connections are the parent's; so are the counts."""
        for connection in list(self._connections):
            # The parent's connection: close this copy of it without shutting it down.
            os.close(connection.sock.detach())
        self._connections = weakref.WeakSet()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        # The proxies that died in the parent before the fork are dead here too: take
        # them off the live counts before asking the server to count ours.
        while self._dead:
            oid = self._dead.popleft()
            self.live[oid] -= 1
        self.live = collections.Counter({oid: n for oid, n in self.live.items() if n > 0})
        self._to_return = {}
        self._pinned = set()
        self.counted = collections.Counter()
        self._to_hold = set(self.live)
        if self._to_hold and self.gone is None:
            self._hold_now()

    def close(self) -> None:
        """Close this process's connections (the manager was shut down)."""
        with self._lock:
            connections, self._connections = list(self._connections), weakref.WeakSet()
        for connection in connections:
            connection.sock.close()
        self._local = threading.local()


class _Sending(threading.local):
    to: Client | None = None  # the client whose request this thread is pickling


_sending = _Sending()
_by_address: dict[str, Client] = {}
_registry_lock = threading.Lock()


def client_for(address: str) -> Client:
    """This process's client of the manager at ``address`` (made on first use)."""
    client = _by_address.get(address)
    if client is None:
        with _registry_lock:
            client = _by_address.get(address)
            if client is None:
                client = _by_address[address] = Client(address)
    return client


def register(client: Client) -> None:
    with _registry_lock:
        _by_address[client.address] = client


def unregister(client: Client) -> None:
    with _registry_lock:
        if _by_address.get(client.address) is client:
            del _by_address[client.address]


__all__ = ["Client", "client_for", "register", "unregister"]
