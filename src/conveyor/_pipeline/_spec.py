"""What a stage is, as the user described it: its kind, its function and its options.

A ``StageSpec`` is immutable and checked when the stage is added, so that a wrong option
fails at the line that wrote it, not when the pipeline runs.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Union

from .._shared._limiters import CapacityLimiter, RateLimiter
from ..errors import describe_callable

Backend = Literal["process", "thread", "async", "dask"]
BACKENDS: tuple[str, ...] = ("process", "thread", "async", "dask")
OnError = Union[Literal["raise", "skip", "emit"], Callable[[Any], Any]]  # noqa: UP007 (3.10 runtime)

# How many items may wait in front of a stage when maxsize is not given, per worker:
# two per worker keeps every worker fed (DataLoader's prefetch factor, rust-parallel's
# channel), times the chunk the stage's engine sends (measured as it runs).
ITEMS_PER_WORKER = 2


class StageKind(enum.Enum):
    MAP = "map"
    FILTER = "filter"
    FLAT_MAP = "flat_map"
    EACH = "each"
    BATCH = "batch"


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``kind`` of ``fn`` with its options (``size``/``max_wait`` for a batch)."""

    kind: StageKind
    fn: Callable[..., Any] | None
    backend: str = "thread"
    workers: int | None = None
    maxsize: int | None = None
    ordered: bool = True
    timeout: float | None = None
    retries: int = 1
    on_error: OnError = "raise"
    limiter: CapacityLimiter | RateLimiter | None = None
    chunksize: int | None = None
    progress: bool = False
    client: Any = None
    concurrency: int | None = None
    size: int = 0
    max_wait: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        _check_spec(self)

    @property
    def label(self) -> str:
        """``2:map(parse)``: the stage in messages and displays."""
        return self.name

    def describe_fn(self) -> str:
        if self.kind is StageKind.BATCH:
            wait = f", max_wait={self.max_wait}" if self.max_wait is not None else ""
            return f"batch({self.size}{wait})"
        return f"{self.kind.value}({describe_callable(self.fn)})"


def _check_spec(spec: StageSpec) -> None:
    where = f"stage {spec.describe_fn()}"
    if spec.kind is StageKind.BATCH:
        _check_batch(spec, where)
        return
    if not callable(spec.fn):
        raise TypeError(f"{where}: the function must be callable, not {type(spec.fn).__name__}")
    if spec.backend not in BACKENDS:
        raise ValueError(
            f"{where}: backend must be one of {', '.join(BACKENDS)}, not {spec.backend!r}"
        )
    is_coroutine = asyncio.iscoroutinefunction(spec.fn)
    if spec.backend == "async" and not is_coroutine:
        raise TypeError(f"{where}: backend='async' takes a coroutine function (async def)")
    if spec.backend != "async" and is_coroutine and spec.concurrency is None:
        raise TypeError(
            f"{where}: {describe_callable(spec.fn)} is a coroutine function; give it "
            f"backend='async', or concurrency=N to run N at once in each {spec.backend} worker"
        )
    _check_concurrency(spec, where, is_coroutine)
    _check_positive(where, "workers", spec.workers)
    _check_positive(where, "maxsize", spec.maxsize)
    _check_positive(where, "chunksize", spec.chunksize)
    if spec.timeout is not None and (
        isinstance(spec.timeout, bool)
        or not isinstance(spec.timeout, (int, float))
        or not spec.timeout > 0
    ):
        raise ValueError(
            f"{where}: timeout must be a positive number of seconds, not {spec.timeout!r}"
        )
    if isinstance(spec.retries, bool) or not isinstance(spec.retries, int) or spec.retries < 0:
        raise ValueError(f"{where}: retries must be a non-negative int, not {spec.retries!r}")
    if spec.on_error not in ("raise", "skip", "emit") and not callable(spec.on_error):
        raise ValueError(
            f"{where}: on_error must be 'raise', 'skip', 'emit' or a callable taking a "
            f"Failure, not {spec.on_error!r}"
        )
    if spec.limiter is not None and not isinstance(spec.limiter, (CapacityLimiter, RateLimiter)):
        raise TypeError(
            f"{where}: limiter must be a conveyor.CapacityLimiter or RateLimiter, not "
            f"{type(spec.limiter).__name__}"
        )
    if not isinstance(spec.ordered, bool):
        raise TypeError(f"{where}: ordered must be True or False, not {spec.ordered!r}")


def _check_concurrency(spec: StageSpec, where: str, is_coroutine: bool) -> None:
    if spec.concurrency is None:
        return
    _check_positive(where, "concurrency", spec.concurrency)
    if not is_coroutine:
        raise TypeError(f"{where}: concurrency= is for coroutine functions (async def)")
    if spec.backend == "async":
        raise ValueError(f"{where}: an async stage's concurrency is its workers= (coroutines)")
    if spec.limiter is not None:
        raise ValueError(
            f"{where}: a limiter cannot yet pace coroutines inside {spec.backend} workers; "
            "use backend='async' with the limiter"
        )


def _check_batch(spec: StageSpec, where: str) -> None:
    if isinstance(spec.size, bool) or not isinstance(spec.size, int) or spec.size < 1:
        raise ValueError(f"{where}: size must be a positive int, not {spec.size!r}")
    wait = spec.max_wait
    if wait is not None and (
        isinstance(wait, bool) or not isinstance(wait, (int, float)) or not wait > 0
    ):
        raise ValueError(f"{where}: max_wait must be a positive number of seconds, not {wait!r}")
    _check_positive(where, "maxsize", spec.maxsize)


def _check_positive(where: str, option: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {option} must be a positive int or None, not {value!r}")


__all__ = ["BACKENDS", "ITEMS_PER_WORKER", "Backend", "OnError", "StageKind", "StageSpec"]
