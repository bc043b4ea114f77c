"""``ManagerStats``: what a manager's server reports about itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ManagerStats:
    """A snapshot of a manager's server.

    ``objects``: shared objects alive; ``clients``: processes connected (each watched
    until it dies); ``connections``: open connections (one per client thread);
    ``requests``: requests served; ``refused``: connections turned away for want of
    the owner's authkey; ``clients_died``: client processes that ended, whose proxies
    were given back; ``waiting``: requests waiting now (an acquire, an event's wait);
    ``given_back``: locks, permits and barrier places given back for processes that
    died holding them.
    """

    objects: int
    clients: int
    connections: int
    requests: int
    refused: int
    clients_died: int
    server_pid: int
    waiting: int = 0
    given_back: int = 0


__all__ = ["ManagerStats"]
