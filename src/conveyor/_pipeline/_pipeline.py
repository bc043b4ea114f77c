"""``conveyor.Pipeline``: the public face. Building a pipeline only records its stages;
iterating it (or ``run()``) starts one ``Run``, which is all the machinery."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from .._cpus import available_cpus
from .._engine._chunking import MAX_LAZY_CHUNK
from .._shared._limiters import CapacityLimiter, RateLimiter
from ..errors import PipelineSpentError
from ._grouped import GROUP_PER_SLOT
from ._report import PipelineReport, StageEvent, StageStats
from ._run import Run
from ._runners import CHUNKS_IN_FLIGHT_PER_WORKER, DEFAULT_ASYNC_CONCURRENCY, MIN_IN_FLIGHT
from ._spec import ITEMS_PER_WORKER, Backend, OnError, StageKind, StageSpec

T = TypeVar("T")


class _Source:
    """The source, shared by the pipelines built from one another: an iterator is used
    up by the first run, so a second run of any of them is refused."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        if not isinstance(iterable, Iterable):
            raise TypeError(f"a pipeline's source must be iterable, not {type(iterable).__name__}")
        self.iterable = iterable
        self.one_shot = iter(iterable) is iterable
        self.used = False

    def take(self) -> Iterator[Any]:
        if self.one_shot and self.used:
            raise PipelineSpentError(
                "this pipeline's source is an iterator another run already used up; build "
                "the pipeline on a fresh one"
            )
        self.used = True
        return iter(self.iterable)


class Pipeline(Generic[T]):
    """Stages of processes, threads or coroutines over a source, bounded between them.

    Each method adds a stage and returns the longer pipeline. Per stage: ``backend``
    (``"process"`` by default, ``"thread"``, ``"async"`` for coroutine functions, the
    default for them, or ``"dask"``), ``workers``, ``maxsize`` (how many items may wait
    in front of it), ``ordered``, ``timeout`` (seconds per item), ``retries`` (re-runs of
    an item whose worker crashed), ``on_error`` (``"raise"``, ``"skip"``, or a callable
    given each :class:`~conveyor.Failure`), ``limiter``, ``chunksize``, ``concurrency``
    (an ``async def`` on process workers: this many coroutines at once in each) and
    ``progress``
    (a line for the stage; ``Pipeline(source, progress=True)``: a line for every stage).
    ``Pipeline(source, subscriber=fn)``: ``fn`` gets every task event of every stage
    that runs on a pool, as a :class:`StageEvent` (on the thread that settled the task,
    so it must be quick).

    Iterating yields the outputs as they come (in order unless a stage says
    ``ordered=False``); ``run()`` runs to the end and returns a :class:`PipelineReport`. A
    pipeline runs once. Every item read from the source ends emitted, filtered, failed
    or cancelled, and the books are checked at the end of every run.

    Example::

        report = (
            Pipeline(open("urls.txt"))
            .map(str.strip, backend="thread")
            .map(fetch, workers=64, limiter=conveyor.RateLimiter("20/s"))   # async def
            .map(parse, workers=4)                                          # processes
            .each(store, backend="thread", workers=2)
            .run()
        )
        print(report.emitted, report.failed)
    """

    def __init__(
        self,
        source: Iterable[T],
        *,
        progress: bool = False,
        subscriber: Callable[[StageEvent], object] | None = None,
    ) -> None:
        if subscriber is not None and not callable(subscriber):
            raise TypeError(f"subscriber must be callable, not {type(subscriber).__name__}")
        self._source = _Source(source)
        self._specs: tuple[StageSpec, ...] = ()
        self._run: Run | None = None
        self._progress = progress
        self._subscriber = subscriber

    # --- building ---------------------------------------------------------------------

    def map(
        self,
        fn: Callable[[T], Any],
        *,
        backend: Backend | None = None,
        workers: int | None = None,
        maxsize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        retries: int = 1,
        on_error: OnError = "raise",
        limiter: CapacityLimiter | RateLimiter | None = None,
        chunksize: int | None = None,
        progress: bool = False,
        client: Any = None,
        concurrency: int | None = None,
    ) -> Pipeline[Any]:
        """``fn(item)`` for each item. Options: see the class."""
        return self._then(StageKind.MAP, fn, locals())

    def filter(
        self,
        fn: Callable[[T], Any],
        *,
        backend: Backend | None = None,
        workers: int | None = None,
        maxsize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        retries: int = 1,
        on_error: OnError = "raise",
        limiter: CapacityLimiter | RateLimiter | None = None,
        chunksize: int | None = None,
        progress: bool = False,
        client: Any = None,
        concurrency: int | None = None,
    ) -> Pipeline[T]:
        """Keep the items for which ``fn(item)`` is true."""
        return self._then(StageKind.FILTER, fn, locals())

    def flat_map(
        self,
        fn: Callable[[T], Iterable[Any]],
        *,
        backend: Backend | None = None,
        workers: int | None = None,
        maxsize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        retries: int = 1,
        on_error: OnError = "raise",
        limiter: CapacityLimiter | RateLimiter | None = None,
        chunksize: int | None = None,
        progress: bool = False,
        client: Any = None,
        concurrency: int | None = None,
    ) -> Pipeline[Any]:
        """Each of ``fn(item)``'s values, in order; an item with none counts as filtered.

        ``fn`` may be a generator function; it runs to its end before any of its values
        goes on, so an item that fails part way through yields none of them.
        """
        return self._then(StageKind.FLAT_MAP, fn, locals())

    def each(
        self,
        fn: Callable[[T], Any],
        *,
        backend: Backend | None = None,
        workers: int | None = None,
        maxsize: int | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        retries: int = 1,
        on_error: OnError = "raise",
        limiter: CapacityLimiter | RateLimiter | None = None,
        chunksize: int | None = None,
        progress: bool = False,
        client: Any = None,
        concurrency: int | None = None,
    ) -> Pipeline[None]:
        """``fn(item)`` for its effect (a sink); consumed items count as emitted."""
        return self._then(StageKind.EACH, fn, locals())

    def batch(
        self,
        size: int,
        *,
        max_wait: float | None = None,
        maxsize: int | None = None,
        progress: bool = False,
    ) -> Pipeline[list[T]]:
        """Lists of ``size`` consecutive items; the last may be shorter, and with
        ``max_wait`` a list goes out part full once its first item waited that long."""
        spec = StageSpec(
            StageKind.BATCH,
            None,
            backend="parent",
            size=size,
            max_wait=max_wait,
            maxsize=maxsize,
            progress=progress,
            name=self._name_of(StageKind.BATCH, None, size),
        )
        return self._with(spec)

    def _then(self, kind: StageKind, fn: Any, options: dict[str, Any]) -> Pipeline[Any]:
        options = {k: v for k, v in options.items() if k not in ("self", "fn")}
        backend = options.pop("backend")
        if backend is None:
            wants_loop = asyncio.iscoroutinefunction(fn) and options["concurrency"] is None
            backend = "async" if wants_loop else "process"
        spec = StageSpec(kind, fn, backend=backend, name=self._name_of(kind, fn), **options)
        return self._with(spec)

    def _name_of(self, kind: StageKind, fn: Any, size: int = 0) -> str:
        """``2:map(parse)``: the position, the kind, the function (a partial's own)."""
        while isinstance(fn, functools.partial):
            fn = fn.func
        what = f"{size}" if kind is StageKind.BATCH else getattr(fn, "__name__", type(fn).__name__)
        return f"{len(self._specs) + 1}:{kind.value}({what})"

    def _with(self, spec: StageSpec) -> Pipeline[Any]:
        longer: Pipeline[Any] = Pipeline.__new__(Pipeline)
        longer._source = self._source
        longer._specs = (*self._specs, spec)
        longer._run = None
        longer._progress = self._progress
        longer._subscriber = self._subscriber
        return longer

    # --- running ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[T]:
        """Start the run; yield the last stage's outputs as they come. Closing the
        iterator (or dropping it after a ``break``) cancels the run."""
        return self._start().outputs()

    @contextmanager
    def open(self) -> Iterator[Iterator[T]]:
        """``with pipeline.open() as results:``: the run is cancelled at the block's end
        if the results were not all read."""
        outputs = self._start().outputs()
        try:
            yield outputs
        finally:
            outputs.close()

    def run(self) -> PipelineReport:
        """Run to the end, dropping the outputs; return the report (raise the first error)."""
        outputs = self._start().outputs()
        try:
            for _ in outputs:
                pass
        finally:
            outputs.close()
        assert self._run is not None
        return self._run.report()

    def _start(self) -> Run:
        if self._run is not None:
            raise PipelineSpentError(
                "this pipeline has run already; a pipeline runs once (build a new one to run again)"
            )
        if not self._specs:
            raise ValueError("a pipeline needs at least one stage (map, filter, each, ...)")
        run = Run(
            self._source.take(), self._specs, progress=self._progress, subscriber=self._subscriber
        )
        self._run = run
        run.start()
        return run

    # --- looking at it ----------------------------------------------------------------

    @property
    def report(self) -> PipelineReport | None:
        """The report of this pipeline's run so far (None before it started)."""
        return self._run.report() if self._run is not None else None

    def statistics(self) -> tuple[StageStats, ...]:
        """Each stage's counts, depth and waits now (empty before the run started)."""
        return self._run.stage_stats() if self._run is not None else ()

    def explain(self) -> str:
        """The stages, and the most items that can be alive at once (the memory bound).

        Example::

            print(Pipeline(range(10**6)).map(f, workers=2).batch(100).explain())
        """
        lines = [f"pipeline of {len(self._specs)} stages"]
        total = 0
        for spec in self._specs:
            workers, waiting, in_flight = _bounds(spec)
            total += waiting + in_flight
            where = "parent" if spec.kind is StageKind.BATCH else f"{spec.backend} x{workers}"
            order = "ordered" if spec.ordered else "unordered"
            lines.append(
                f"  {spec.name:<28} {where:<12} waiting <= {waiting:>6,}  in flight <= "
                f"{in_flight:>6,} ({order})"
            )
        lines.append(
            f"at most {total:,} items alive at once (waiting + in flight, the reorder "
            "buffers included; a flat_map multiplies what follows it by its fan-out)"
        )
        return "\n".join(lines)


def _bounds(spec: StageSpec) -> tuple[int, int, int]:
    """Workers, most items waiting in front, most in flight (what ``Stage`` enforces)."""
    if spec.kind is StageKind.BATCH:
        return 0, spec.maxsize or spec.size, 2 * spec.size
    if spec.backend == "async":
        workers = spec.workers or DEFAULT_ASYNC_CONCURRENCY
        in_flight = 2 * workers
    elif spec.concurrency is not None:  # groups of coroutines, one a chunk
        workers = spec.workers or available_cpus()
        in_flight = CHUNKS_IN_FLIGHT_PER_WORKER * workers * GROUP_PER_SLOT * spec.concurrency
    else:
        workers = spec.workers or available_cpus()
        chunk = spec.chunksize or MAX_LAZY_CHUNK
        in_flight = max(MIN_IN_FLIGHT, CHUNKS_IN_FLIGHT_PER_WORKER * workers * chunk)
    waiting = spec.maxsize or max(ITEMS_PER_WORKER * workers, in_flight // 2)
    return workers, waiting, in_flight


__all__ = ["Pipeline"]
