"""A subscription to a pool's task events: ``pool.subscribe(fn)``, ended by ``close()``."""

from __future__ import annotations

from types import TracebackType

from .._engine._engine import Engine
from .._engine._events import Subscriber


class Subscription:
    """``subscriber`` is called with every event of the pool until this is closed.

    Use it as a context manager to end the subscription with the block.

    Example::

        with pool.subscribe(print):        # prints every TaskEvent and WorkerEvent
            pool.map(work, items)
    """

    def __init__(self, engine: Engine, subscriber: Subscriber) -> None:
        self._engine: Engine | None = engine
        self.subscriber = subscriber
        engine.subscribe(subscriber)

    @property
    def active(self) -> bool:
        return self._engine is not None

    def close(self) -> None:
        """Stop delivering events to the subscriber (idempotent)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.unsubscribe(self.subscriber)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["Subscription"]
