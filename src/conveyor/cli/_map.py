"""``conveyor map module:func``: a Python function over JSON lines, records out.

Each input line is decoded *in the worker* (a line that is not JSON fails alone, as its
own record) and is the function's one argument, or with ``--star`` its positional
arguments (a list), with ``--kwargs`` its keyword arguments (an object). Each output line
is one record: ``{"seq", "input", "ok": true, "result"}`` or ``{"seq", "input", "ok":
false, "error": {"type", "message", "traceback"}}``, in input order with ``-k``. It runs
on a one-stage ``conveyor.Pipeline`` (processes, threads or Dask), whose
``on_error="emit"`` hands a timed-out or crashed record back in its place, so every
record gets its line. The job log, journal, resume and ``--halt`` are ``run``'s.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .._pipeline._pipeline import Pipeline
from .._pipeline._report import Failure
from ..errors import TaskTimeoutError, WorkerCrashedError
from ._halt import exit_status
from ._job import JobResult
from ._joblog import JobLog, open_joblog
from ._journal import fingerprint, journal_for
from ._options import MapOptions, UsageError
from ._resume import load
from ._sources import read_records


class Outcome(NamedTuple):
    """One record's end, as the worker returns it: the output line made there."""

    seq: int
    line: str
    exitval: int  # 0: it returned; 1: it raised (or its input was not JSON)
    text: str  # the output record, JSON
    started_at: float
    runtime_s: float


class MapCall:
    """What a worker runs for one record: decode, call, encode; never raises."""

    def __init__(self, fn: Callable[..., Any], spread: str | None) -> None:
        self.fn = fn
        self.spread = spread
        self.__module__ = getattr(fn, "__module__", None) or __name__
        self.__qualname__ = getattr(fn, "__qualname__", None) or repr(fn)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.fn, self.spread))

    def __call__(self, record: tuple[int, str]) -> Outcome:
        seq, line = record
        started_at, started = time.time(), time.perf_counter()
        value: Any = line
        try:
            value = json.loads(line)
            if self.spread == "star":
                result = self.fn(*value)
            elif self.spread == "kwargs":
                result = self.fn(**value)
            else:
                result = self.fn(value)
            text = json.dumps({"seq": seq, "input": value, "ok": True, "result": result})
            exitval = 0
        except Exception as exc:
            # The traceback from the user's frames on: this call's own frame is noise.
            frames = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
            tb = "".join(traceback.format_exception(type(exc), exc, frames))
            text = error_record(seq, value, exc, tb)
            exitval = 1
        return Outcome(seq, line, exitval, text, started_at, time.perf_counter() - started)


def error_record(seq: int, value: Any, exc: BaseException, tb: str) -> str:
    error = {"type": type(exc).__name__, "message": str(exc), "traceback": tb}
    try:
        return json.dumps({"seq": seq, "input": value, "ok": False, "error": error})
    except (TypeError, ValueError):
        return json.dumps({"seq": seq, "input": repr(value), "ok": False, "error": error})


def _decoded(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return line


def load_function(target: str) -> Callable[..., Any]:
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        raise UsageError(f"conveyor map: expected module:function, not {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the workers inherit it
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"conveyor map: cannot import {module_name!r}: {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UsageError(f"conveyor map: {module_name!r} has no function {name!r}")
    return fn


class MapCommand:
    def __init__(self, options: MapOptions) -> None:
        self.options = options
        self.fn = load_function(options.target)
        self.journal = journal_for(options.joblog, options.resume)
        self.resume = load(options.resume, options.joblog, self.journal)
        self.done = self.failed = 0
        self.trigger: JobResult | None = None

    def records(self) -> Iterator[tuple[int, str]]:
        streams = self.options.files or ["-"]
        seq = 0
        for path in streams:
            stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
            try:
                for line in read_records(stream, None):
                    if not line.strip():
                        continue
                    seq += 1
                    if not self.resume.skips(seq, self._key(line)):
                        yield seq, line
            finally:
                if stream is not sys.stdin:
                    stream.close()

    def _key(self, line: str) -> str:
        return fingerprint(self.options.target, (line,), None)

    def run(self) -> int:
        options = self.options
        joblog = open_joblog(options.joblog, options.resume)
        client = self._client()
        pipeline = Pipeline(self.records()).map(
            MapCall(self.fn, options.spread),
            backend=options.backend,
            workers=options.jobs,
            ordered=options.keep_order,
            timeout=options.timeout,
            retries=options.retries,
            on_error="emit",
            client=client,
        )
        try:
            with pipeline.open() as results:
                for outcome in results:
                    job, text = self._settled(outcome)
                    sys.stdout.write(text + "\n")
                    sys.stdout.flush()
                    self._log(job, joblog)
                    if self._halts(job):
                        break
        except KeyboardInterrupt:
            return 130
        finally:
            self.resume.report()
            if joblog is not None:
                joblog.close()
            if self.journal is not None:
                self.journal.close()
            if client is not None:
                client.close()
        return exit_status(self.failed, self.done, options.halt, self.trigger)

    def _settled(self, outcome: Outcome | Failure) -> tuple[JobResult, str]:
        """The record's job (for the log) and its output line."""
        target = self.options.target
        if isinstance(outcome, Failure):  # timed out, its worker died, or it did not pickle
            seq, line = outcome.item
            exc = outcome.error
            killed = isinstance(exc, (TaskTimeoutError, WorkerCrashedError))
            job = JobResult(seq, (line,), f"{target} {line}", started_at=time.time())
            # GNU parallel's way for a job it killed: Exitval -1 and the signal.
            job.exitval, job.signal = (-1, signal.SIGTERM) if killed else (1, 0)
            return job, error_record(seq, _decoded(line), exc, str(exc.__cause__ or ""))
        job = JobResult(
            outcome.seq,
            (outcome.line,),
            f"{target} {outcome.line}",
            exitval=outcome.exitval,
            started_at=outcome.started_at,
            runtime_s=outcome.runtime_s,
        )
        return job, outcome.text

    def _log(self, job: JobResult, joblog: JobLog | None) -> None:
        self.done += 1
        if not job.ok:
            self.failed += 1
        if joblog is not None:
            joblog.write(job)
        if self.journal is not None:
            self.journal.finished(job, self._key(job.arguments[0]))

    def _halts(self, job: JobResult) -> bool:
        halt = self.options.halt
        if halt is None or not halt.stops_at(job, self.done, self.failed, None):
            return False
        self.trigger = job
        return True

    def _client(self) -> Any:
        if self.options.scheduler is None:
            return None
        from distributed import Client

        return Client(self.options.scheduler, set_as_default=False)


__all__ = ["MapCommand", "load_function"]
