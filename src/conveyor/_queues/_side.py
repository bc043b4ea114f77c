"""What one process keeps for a queue, and the fast paths it allows."""

from __future__ import annotations

from ._backlog import Backlog
from ._handles import QueueHandles, Role
from ._pid import current_pid
from ._rows import Row


class _Side:
    """What one process keeps for a queue: its row in the books and its backlog.

    ``fast_put`` / ``fast_get``: nothing is left to settle before the next put or get
    but the message itself (this process is a producer, or a counted consumer; no error
    waits; the queue is unbounded, for puts), so they skip the checks of a first call.
    Every change of role clears them.
    """

    def __init__(self, handles: QueueHandles) -> None:
        self.pid = current_pid()
        self.row = Row(handles.books)
        self.backlog = Backlog(handles, self.row)
        self.closed = False
        self.consuming = False
        self.fast_put = False
        self.fast_get = False
        # What the fast paths touch, one attribute away.
        self.words = handles.books.words
        self.lock = self.row.lock
        self.puts, self.gets = self.row.puts_index, self.row.gets_index
        self.pending_error: Exception | None = None  # an item get_many could not unpickle
        handles.on_producing = self._producing
        handles.on_expected = self._settle_again
        if handles.role is Role.PRODUCER:
            self.row.producers(1)

    def _producing(self, now: bool) -> None:
        self.fast_put = self.fast_get = False
        self.row.producers(1 if now else -1)

    def _settle_again(self) -> None:
        """Handed the queue again: the next get must show this process is a consumer."""
        self.fast_put = self.fast_get = False


__all__ = ["_Side"]
