"""What every face offers to watch its pool: ``statistics()`` and ``subscribe()``."""

from __future__ import annotations

from collections.abc import Callable

from .._engine._events import Event
from .._stats import PoolStats
from ._pool_core import PoolCore
from ._subscription import Subscription


class Observable:
    """Mixed into every public pool; reads only the face's ``PoolCore``."""

    _core: PoolCore

    def statistics(self) -> PoolStats:
        """A frozen snapshot of the pool's counters (``print()`` it for a report).

        Example::

            s = pool.statistics()
            print(s.tasks_done, s.worker_crashes, s.mean_chunk_size)
        """
        return self._core.statistics()

    stats = statistics  # the earlier name, kept as an alias

    def subscribe(self, subscriber: Callable[[Event], object]) -> Subscription:
        """Call ``subscriber(event)`` for each task, worker and job event (``TaskEvent``).

        It runs on the thread that settled the task (often conveyor's supervisor), outside
        every lock: keep it quick. What it raises is logged, never fatal.

        Example::

            with pool.subscribe(print):
                pool.map(work, items)
        """
        return self._core.subscribe(subscriber)


__all__ = ["Observable"]
