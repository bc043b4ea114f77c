"""Progress reporting for the modern API: a tqdm bar, or a callback of the user's.

The bar is fed by a sink wrapper, so the engine knows nothing of progress. tqdm is
imported only when a bar is asked for, keeping ``import conveyor`` light.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from .._engine._jobs import Sink

ProgressArg = bool | str | Callable[[int, int | None], Any] | None


class _Bar:
    """Counts finished tasks and shows them: tqdm, or calls ``callback(done, total)``.

    It closes once, at the true count: when every task is counted, when the job ends
    with some withdrawn (its total is then left as it was, never rewritten to look
    complete), or when the caller stops waiting (an exception reached them, Ctrl-C, an
    early ``break``). After that, late results no longer move it.
    """

    def __init__(self, progress: ProgressArg, total: int | None) -> None:
        self._lock = threading.Lock()
        self.done = 0
        self.total = total
        self._callback: Callable[[int, int | None], Any] | None = None
        self._tqdm: Any = None
        self._closed = False
        if callable(progress):
            self._callback = progress
        else:
            from tqdm.auto import tqdm

            desc = progress if isinstance(progress, str) else None
            self._tqdm = tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True)

    def advance(self, count: int) -> None:
        # Results arrive on several threads (thread pools); tqdm's own counter is not
        # thread-safe, so it is advanced under our lock.
        with self._lock:
            if self._closed:
                return
            self.done += count
            done = self.done
            if self._tqdm is not None:
                self._tqdm.update(count)
        if self._callback is not None:
            self._callback(done, self.total)
        if self.total is not None and done >= self.total:
            # Close the bar before the caller gets its last result, so that nothing the
            # caller prints next can land in the middle of the bar's last line.
            self.job_ended(self.total)

    def job_ended(self, total: int) -> None:
        """The job is over; ``total`` tasks were read (some may have been withdrawn)."""
        with self._lock:
            if self._tqdm is not None and self.total is None and self.done == total:
                self._tqdm.total = total  # lazy input, all of it run: now the total is known
        self.stop()

    def stop(self) -> None:
        """Close the display at the count reached so far (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._tqdm is not None:
                self._tqdm.close()  # draws the final state once more, then lets go


class ProgressSink:
    """Advances the bar for each finished task, then forwards to the real sink.

    The bar moves first: once the caller has its results (``map`` returned, the loop
    ended), the bar has already counted them.
    """

    def __init__(self, inner: Sink, bar: _Bar) -> None:
        self._inner = inner
        self.bar = bar

    def deliver(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        self.bar.advance(len(indices))
        self._inner.deliver(indices, values)

    def fail(self, index: int, exc: BaseException) -> None:
        self.bar.advance(1)
        self._inner.fail(index, exc)

    def input_failed(self, index: int, exc: BaseException) -> None:
        self.bar.stop()
        self._inner.input_failed(index, exc)

    def abort(self, exc: BaseException) -> None:
        self.bar.stop()
        self._inner.abort(exc)

    def close(self, total: int) -> None:
        self.bar.job_ended(total)
        self._inner.close(total)

    def claim(self) -> bool:
        return self._inner.claim()


def with_progress(
    sink: Sink, progress: ProgressArg, total: int | None
) -> tuple[Sink, Callable[[], None] | None]:
    """Wrap ``sink`` so finished tasks advance a progress display (if one is wanted).

    Returns the sink to give the job, and the function that closes the display when the
    caller stops waiting (None without a display).
    """
    if not progress:
        return sink, None
    wrapped = ProgressSink(sink, _Bar(progress, total))
    return wrapped, wrapped.bar.stop
