"""``conveyor run``: the jobs, their slots, their output in order, the log, how it ends.

Jobs run on a conveyor thread pool, one thread a slot, each waiting on its job's process
group. At most ``-j`` run at once; input is read as slots free up, never all at once.
Finished jobs are printed (in input order with ``-k``, else as they finish), then logged.
``--halt`` and Ctrl-C stop the run: ``now`` and Ctrl-C stop the running jobs with the
TERM-then-KILL sequence; Ctrl-C also logs them (Exitval -1, GNU parallel does not) and
exits 130.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import IO, Any

from ..workers import WorkerPool
from ._halt import exit_status
from ._job import JobResult, Running, run_job
from ._joblog import JobLog, open_joblog
from ._journal import fingerprint, journal_for
from ._options import RunOptions
from ._render import Template
from ._results import write_results
from ._resume import load
from ._sources import job_arguments

INTERRUPTED = 130


class _Slots:
    """Slot numbers 1..N for ``{%}``: no two running jobs share one."""

    def __init__(self, count: int) -> None:
        self._free = list(range(count, 0, -1))
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            return self._free.pop()

    def give(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)


class _Printer:
    """Where job output goes: ours, whole, stdout before stderr, optionally tagged."""

    def __init__(self, tag: bool) -> None:
        self._tag = tag
        self._lock = threading.Lock()
        self._out = sys.stdout.buffer
        self._err = sys.stderr.buffer

    def _prefix(self, job: JobResult) -> bytes:
        return (" ".join(job.arguments) + "\t").encode() if self._tag else b""

    def job(self, job: JobResult) -> None:
        with self._lock:
            for stream, target in ((job.stdout, self._out), (job.stderr, self._err)):
                if stream is None:
                    continue
                self._copy(stream, target, self._prefix(job))
                stream.close()
            self._out.flush()
            self._err.flush()

    def line(self, job: JobResult, line: bytes, is_err: bool) -> None:
        with self._lock:
            target = self._err if is_err else self._out
            target.write(self._prefix(job) + line)
            target.flush()

    @staticmethod
    def _copy(stream: IO[bytes], target: IO[bytes], prefix: bytes) -> None:
        if not prefix:
            while chunk := stream.read(1 << 16):
                target.write(chunk)
            return
        for line in stream:
            target.write(prefix + line)


class RunCommand:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.template = Template.parse(options.command)
        self.running = Running()
        self.slots = _Slots(options.jobs)
        self.printer = _Printer(options.tag)
        self.done = 0
        self.failed = 0
        self.trigger: JobResult | None = None
        self._total = _known_total(options)
        self.journal = journal_for(options.joblog, options.resume)
        self.resume = load(options.resume, options.joblog, self.journal)

    def jobs(self) -> Iterator[JobResult]:
        """The jobs to run, skipping what a resume says was done."""
        resume = self.resume
        if resume.mode == "retry-failed":
            for seq, command, key in resume.retry:
                yield JobResult(seq, (), command, key=key)
            return
        stdin = sys.stdin if not self.options.sources else None
        arguments = job_arguments(
            self.options.sources,
            link=self.options.link,
            stdin=stdin,
            delimiter=self.options.delimiter,
        )
        template = self.template
        for seq, args in enumerate(arguments, 1):
            key = fingerprint(template.text, args, seq if template.uses_seq else None)
            if not resume.skips(seq, key):
                yield JobResult(seq, args, "", key=key)

    def run(self) -> int:
        if self.options.dry_run:
            for job in self.jobs():
                print(self.template.render(job.arguments, job.seq, 1))
            return 0
        joblog = open_joblog(self.options.joblog, self.resume.mode)
        bar = _bar(self._total) if self.options.bar else None
        try:
            return self._run(joblog, bar)
        finally:
            self.resume.report()
            if joblog is not None:
                joblog.close()
            if self.journal is not None:
                self.journal.close()
            if bar is not None:
                bar.close()

    def _run(self, joblog: JobLog | None, bar: Any) -> int:
        options = self.options
        pending: deque[tuple[JobResult, Future[JobResult]]] = deque()
        jobs = self.jobs()
        halting = False
        with WorkerPool(options.jobs, backend="thread") as pool:
            try:
                while True:
                    while not halting and len(pending) < options.jobs:
                        job = next(jobs, None)
                        if job is None:
                            break
                        pending.append((job, pool.submit(self._one, job)))
                    if not pending:
                        break
                    wait([f for _, f in pending], return_when=FIRST_COMPLETED)
                    for job in self._finished(pending):
                        self._emit(job, joblog, bar)
                        if not halting and self._halts(job):
                            halting = True
                            if options.halt is not None and options.halt.when == "now":
                                self.running.stop_all()
            except KeyboardInterrupt:
                self.running.stop_all()
                for _, future in pending:
                    self._emit(future.result(), joblog, bar)
                return INTERRUPTED
        return exit_status(self.failed, self.done, options.halt, self.trigger)

    def _one(self, job: JobResult) -> JobResult:
        slot = self.slots.take()
        try:
            job.slot = slot
            if not job.command:  # a retried command from the journal is run as it was
                job.command = self.template.render(job.arguments, job.seq, slot)
            if self.journal is not None:
                job.started_at = time.time()
                self.journal.started(job, job.key)
            env = dict(
                os.environ,
                PARALLEL_SEQ=str(job.seq),
                CONVEYOR_SEQ=str(job.seq),
                PARALLEL_JOBSLOT=str(slot),
                CONVEYOR_SLOT=str(slot),
            )
            options = self.options
            return run_job(
                job,
                running=self.running,
                timeout=options.timeout,
                retries=options.retries,
                capture=options.output == "group" or options.results is not None,
                env=env,
                # --results needs the output whole, in files: it makes the output grouped.
                on_line=(
                    self.printer.line
                    if options.output == "line-buffer" and options.results is None
                    else None
                ),
            )
        finally:
            self.slots.give(slot)

    def _finished(self, pending: deque[tuple[JobResult, Future[JobResult]]]) -> list[JobResult]:
        if self.options.keep_order:
            out = []
            while pending and pending[0][1].done():
                out.append(pending.popleft()[1].result())
            return out
        done = [(job, f) for job, f in pending if f.done()]
        for entry in done:
            pending.remove(entry)
        return [f.result() for _, f in done]

    def _emit(self, job: JobResult, joblog: JobLog | None, bar: Any) -> None:
        if self.options.results is not None:
            write_results(self.options.results, job)  # before the log line, as the output
        self.printer.job(job)
        if joblog is not None:
            joblog.write(job)
        if self.journal is not None:
            self.journal.finished(job, job.key)
        self.done += 1
        if not job.ok:
            self.failed += 1
            if job.timed_out:
                print(
                    f"conveyor run: job {job.seq} timed out and was killed: {job.command}",
                    file=sys.stderr,
                )
        if bar is not None:
            bar.update(1)

    def _halts(self, job: JobResult) -> bool:
        halt = self.options.halt
        if halt is None or not halt.stops_at(job, self.done, self.failed, self._total):
            return False
        self.trigger = job
        print(
            f"conveyor run: halting ({halt.when}) after job {job.seq}: {job.command}",
            file=sys.stderr,
        )
        return True


def _known_total(options: RunOptions) -> int | None:
    if not options.sources:
        return None
    sizes = [len(s.values or []) for s in options.sources]
    if options.link:
        return max(sizes, default=0)
    total = 1
    for size in sizes:
        total *= size
    return total


def _bar(total: int | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="job", file=sys.stderr, dynamic_ncols=True)


__all__ = ["INTERRUPTED", "RunCommand"]
