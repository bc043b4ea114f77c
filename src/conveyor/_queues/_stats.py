"""``QueueStats``: what a queue's books say, over every process that used it."""

from __future__ import annotations

from dataclasses import dataclass

from ._books import (
    H_DISCARDED,
    H_RETIRED_GETS,
    H_RETIRED_PUTS,
    R_BLOCKED_NS,
    R_CONSUMERS,
    R_GETS,
    R_PRODUCERS,
    R_PUTS,
    Books,
)


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of a queue's counters, over every process that used it.

    ``stranded``: items put by processes that exited or died before their backlog was
    sent. ``interrupted``: gets cut short by a death (each may have cost one item).
    ``discarded``: items dropped by ``shutdown(immediate=True)``. ``abandoned``: items
    taken by processes that died before marking them done (``JoinableQueue``).
    ``producers``: live processes that have put and not closed (for a channel: open
    send handles); ``consumers``: live processes that have taken (open receive handles).
    ``undeliverable`` (channels): items left once every receive handle is gone.
    """

    put: int
    got: int
    depth: int
    waiting_to_send: int
    blocked_s: float
    stranded: int
    interrupted: int
    discarded: int
    maxsize: int
    abandoned: int = 0
    producers: int = 0
    consumers: int = 0
    undeliverable: int = 0


def read_stats(books: Books, maxsize: int, counts_abandoned: bool) -> QueueStats:
    """A snapshot of ``books``; ``abandoned`` only for queues that track ``task_done``."""
    words = books.words
    return QueueStats(
        put=books.total(R_PUTS) + words[H_RETIRED_PUTS],
        got=books.total(R_GETS) + words[H_RETIRED_GETS],
        depth=books.depth(),
        waiting_to_send=books.waiting_to_send(),
        blocked_s=books.total(R_BLOCKED_NS) / 1e9,
        stranded=books.stranded(),
        interrupted=books.interrupted(),
        discarded=words[H_DISCARDED],
        maxsize=maxsize,
        abandoned=books.abandoned() if counts_abandoned else 0,
        producers=books.live_total(R_PRODUCERS),
        consumers=books.live_total(R_CONSUMERS),
    )


__all__ = ["QueueStats", "read_stats"]
