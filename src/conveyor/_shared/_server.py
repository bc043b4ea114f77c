"""A manager's server: one process, one thread, one ``epoll`` loop over its clients.

Each request is handled to the end before the next, so every method of a shared
object runs alone: ``d.incr(k)`` or ``d.apply(k, fn)`` cannot interleave with another
client's update, which is what makes them atomic. A process that connects is watched
through a ``pidfd`` from its first connection on; when it dies, its proxies are given
back at once (``_objects.Table.drop_process``). When the process that owns the
manager dies, the server exits, and the socket's directory goes with the owner.
"""

from __future__ import annotations

import enum
import logging
import os
import pickle
import secrets
import select
import signal
import socket
import struct
from collections.abc import ItemsView, KeysView, ValuesView
from typing import Any

from .._queues._pid import alive
from . import _refs
from ._objects import CALLER_METHODS, KINDS, BatchIterator, Table
from ._protocol import CHALLENGE_BYTES, REFUSED, WELCOME, Op, Receiver, Status, answer
from ._protocol import send_message as _send
from ._stats import ManagerStats
from ._sync import SyncObject, log_release
from ._waits import PARKED, Caller, Timers

_log = logging.getLogger("conveyor")
# A client that stops reading its replies cannot stall the server for longer.
SEND_TIMEOUT_S = 10.0
_PEERCRED = struct.Struct("3i")
_VIEWS = (KeysView, ValuesView, ItemsView)


class ConnState(enum.Enum):
    CHALLENGED = "challenged"  # the challenge is sent; the answer is awaited
    READY = "ready"  # authenticated: requests and replies


class _Connection:
    __slots__ = ("challenge", "last", "pid", "sock", "state")

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.state = ConnState.CHALLENGED
        self.challenge = secrets.token_bytes(CHALLENGE_BYTES)
        self.last: Caller | None = None  # the request answered last, or still waiting


class Server:
    """The loop, the connections and the processes behind them, and the objects."""

    def __init__(self, listener: socket.socket, authkey: bytes, owner_pid: int) -> None:
        self.table = Table()
        self._listener = listener
        self._authkey = authkey
        self._epoll = select.epoll()
        self._connections: dict[int, _Connection] = {}
        self._pidfds: dict[int, int] = {}  # pidfd -> pid, one per client process
        self._pids: dict[int, int] = {}  # pid -> pidfd
        self._receiver = Receiver()
        self._timers = Timers()
        self._to_drop: list[_Connection] = []
        self._running = True
        self._requests = 0
        self._refused = 0
        self._deaths = 0
        self._given_back = 0  # locks and permits given back for dead processes
        self._owner_fd = self._watch(owner_pid)
        if self._owner_fd is None:
            self._running = False  # the owner died before we started
        listener.setblocking(False)
        self._epoll.register(listener, select.EPOLLIN)

    # --- the loop ---------------------------------------------------------------------

    def serve(self) -> None:
        _refs.serving(self.table, self._listener.getsockname())
        try:
            while self._running:
                for fd, _events in self._epoll.poll(self._timers.poll_timeout_s()):
                    self._on_ready(fd)
                    self._drop_broken()
                self._timers.expire()
                self._drop_broken()
        finally:
            self._close()

    def _on_ready(self, fd: int) -> None:
        if fd == self._listener.fileno():
            self._accept()
        elif fd == self._owner_fd:
            self._running = False  # the owner is gone: nobody may reach us any more
        elif fd in self._pidfds:
            self._process_died(self._pidfds[fd])
        elif fd in self._connections:
            self._on_connection(self._connections[fd])

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        pid = _PEERCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )[0]
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(SEND_TIMEOUT_S), 0)
        )
        connection = _Connection(sock, pid)
        try:
            sock.send(connection.challenge)
        except OSError:
            sock.close()
            return
        self._connections[sock.fileno()] = connection
        self._epoll.register(sock, select.EPOLLIN)

    def _on_connection(self, connection: _Connection) -> None:
        try:
            if connection.state is ConnState.CHALLENGED:
                self._check_answer(connection)
            else:
                self._serve_request(connection)
        except (EOFError, OSError):
            self._drop(connection)

    def _check_answer(self, connection: _Connection) -> None:
        given = connection.sock.recv(64, socket.MSG_DONTWAIT)
        if not given:
            raise EOFError
        if not secrets.compare_digest(given, answer(self._authkey, connection.challenge)):
            self._refused += 1
            _log.warning(
                "conveyor: the manager refused a connection from pid %d, which does not "
                "hold its owner's authkey",
                connection.pid,
            )
            connection.sock.send(REFUSED)
            raise EOFError
        connection.sock.send(WELCOME)
        connection.state = ConnState.READY
        self._watch_client(connection.pid)

    def _serve_request(self, connection: _Connection) -> None:
        try:
            request = self._receiver.receive(connection.sock, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        self._requests += 1
        if request[0] == Op.ABANDON:
            self._abandon(connection)
            return
        self._timers.forget_answered(connection)
        caller = connection.last = Caller(
            connection,
            connection.pid,
            lambda value: self._reply(connection, (Status.OK, value)),
            lambda error: self._reply(connection, (Status.RAISED, error)),
            self._timers,
        )
        try:
            result = self._handle(caller, request)
        except BaseException as exc:  # the caller raises it: nothing of it stays here
            caller.undo = None
            self._reply(connection, (Status.RAISED, exc))
            return
        if result is not PARKED:
            self._reply(connection, (Status.OK, result))

    def _abandon(self, connection: _Connection) -> None:
        """The client stopped waiting for its last reply (an interrupt): withdraw the
        request if it still waits, or give back what its reply granted."""
        withdrawn = self._timers.withdraw_connection(connection)
        last = connection.last
        if not withdrawn and last is not None and last.undo is not None:
            last.undo()
        connection.last = None
        self._reply(connection, (Status.ABANDONED, None))

    def _reply(self, connection: _Connection, reply: tuple[Status, Any]) -> None:
        _refs.replying_to(connection.pid)
        try:
            try:
                _send(connection.sock, reply)
            except (TypeError, AttributeError, ValueError, pickle.PicklingError) as exc:
                _send(connection.sock, (Status.RAISED, _unpicklable(reply[1], exc)))
        except OSError:
            # Its client is gone. Dropped after the event at hand: a reply can be sent
            # while another connection's request is handled (a release grants a wait).
            self._to_drop.append(connection)

    # --- requests ---------------------------------------------------------------------

    def _handle(self, caller: Caller, request: tuple[Any, ...]) -> Any:
        op, pid = request[0], caller.pid
        if op == Op.CALL:
            _, oid, method, args, kwargs, returned = request
            self._give_back(pid, returned)
            return self._call(caller, oid, method, args, kwargs)
        if op == Op.CREATE:
            _, typeid, args, kwargs, returned = request
            self._give_back(pid, returned)
            oid = self.table.add(KINDS[typeid].make(*args, **kwargs), typeid)
            self.table.hold(oid, pid)
            return oid
        if op == Op.RELEASE:
            self._give_back(pid, request[1])
            return None
        if op == Op.HOLD:
            # One already freed is left out: its proxy says so when it is used.
            held = tuple(oid for oid in request[1] if oid in self.table.entries)
            for oid in held:
                self.table.hold(oid, pid)
            return held
        if op == Op.STATS:
            return self._stats()
        if op == Op.SHUTDOWN:
            self._running = False
            return None
        raise ValueError(f"conveyor: unknown manager request {op!r}")

    def _call(
        self, caller: Caller, oid: int, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        entry = self.table.entries.get(oid)
        if entry is None:
            raise LookupError(f"the shared object {oid} no longer exists in this manager")
        if method not in entry.kind.methods:
            raise AttributeError(f"a shared {entry.typeid} has no method {method!r} to call")
        obj = entry.obj
        if entry.kind.sync or method in CALLER_METHODS:
            return getattr(obj, method)(caller, *args, **kwargs)
        if method == "__iter__":
            return _refs.Ref(self.table.add(BatchIterator(iter(obj)), "Iterator"))
        result = getattr(obj, method)(*args, **kwargs)
        if result is obj:
            return None  # ``l *= 2``: the caller's proxy stays its proxy
        if isinstance(result, _VIEWS):
            return list(result)  # ``d.items()``: a list, as from multiprocessing's proxies
        return result

    def _give_back(self, pid: int, returned: tuple[tuple[int, int], ...]) -> None:
        for oid, count in returned:
            self.table.drop(oid, pid, count)

    def _stats(self) -> ManagerStats:
        return ManagerStats(
            objects=len(self.table.entries),
            clients=len(self._pids),
            connections=len(self._connections),
            requests=self._requests,
            refused=self._refused,
            clients_died=self._deaths,
            server_pid=os.getpid(),
            waiting=self._timers.waiting(),
            given_back=self._given_back,
        )

    # --- processes --------------------------------------------------------------------

    def _watch(self, pid: int) -> int | None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        self._epoll.register(fd, select.EPOLLIN)
        return fd

    def _watch_client(self, pid: int) -> None:
        if pid in self._pids:
            return
        fd = self._watch(pid)
        if fd is None:  # already gone: give back whatever it held
            self.table.drop_process(pid)
            return
        self._pids[pid] = fd
        self._pidfds[fd] = pid

    def _process_died(self, pid: int) -> None:
        fd = self._pids.pop(pid)
        del self._pidfds[fd]
        self._epoll.unregister(fd)
        os.close(fd)
        self._deaths += 1
        for oid, entry in list(self.table.entries.items()):
            if isinstance(entry.obj, SyncObject) and (what := entry.obj.process_died(pid)):
                self._given_back += 1
                log_release(pid, what, entry.typeid, oid)
        held = self.table.drop_process(pid)
        if held:
            _log.debug("conveyor: manager client %d ended; its %d objects given back", pid, held)

    def _drop_broken(self) -> None:
        while self._to_drop:
            connection = self._to_drop.pop()
            if connection.sock.fileno() in self._connections:
                self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        self._timers.withdraw_connection(connection)
        for entry in list(self.table.entries.values()):
            if isinstance(entry.obj, SyncObject):
                entry.obj.connection_closed(connection)
        fd = connection.sock.fileno()
        self._connections.pop(fd, None)
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        connection.sock.close()
        if connection.pid in self._pids and not alive(connection.pid):
            self._process_died(connection.pid)

    def _close(self) -> None:
        for connection in list(self._connections.values()):
            connection.sock.close()
        self._connections.clear()
        for fd in [*self._pidfds, self._owner_fd]:
            if fd is not None:
                os.close(fd)
        self._listener.close()
        self._epoll.close()


def _unpicklable(value: Any, error: BaseException) -> BaseException:
    return TypeError(
        f"conveyor: the manager could not send back a {type(value).__name__} "
        f"(it cannot be pickled: {error})"
    )


def serve(listener: socket.socket, authkey: bytes, owner_pid: int) -> None:
    """The server process's whole life (the target of its ``multiprocessing`` process).

    Ctrl-C reaches the whole process group; the server ignores it, as the stdlib's
    does, so that the owner can still use its objects while it handles the interrupt.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    Server(listener, authkey, owner_pid).serve()


__all__ = ["Server", "serve"]
