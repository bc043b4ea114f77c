"""One job: a shell command in a process group of its own, its output kept, its end.

A job runs ``/bin/sh -c COMMAND`` in a new session, so that a timeout, ``--halt now`` or
Ctrl-C can stop it *and everything it started* (``sh -c`` grandchildren included) with
GNU parallel's TERM-then-KILL sequence. Its output goes to unnamed temporary files (on
disk, as GNU's ``--group`` does: a job's output can be larger than memory), printed when it
ends; or straight to ours (``-u``); or line by line (``--line-buffer``, below).
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

# GNU parallel's --term-seq: TERM, wait 200 ms, TERM, 100 ms, TERM, 50 ms, KILL, 25 ms.
TERM_SEQUENCE: tuple[tuple[int, float], ...] = (
    (signal.SIGTERM, 0.2),
    (signal.SIGTERM, 0.1),
    (signal.SIGTERM, 0.05),
    (signal.SIGKILL, 0.025),
)


@dataclass
class JobResult:
    seq: int
    arguments: tuple[str, ...]
    command: str
    slot: int = 0
    started_at: float = 0.0  # epoch seconds
    runtime_s: float = 0.0
    exitval: int = 0
    signal: int = 0
    attempts: int = 0
    timed_out: bool = False
    interrupted: bool = False
    key: str = ""  # its fingerprint in the journal
    stdout: IO[bytes] | None = field(default=None, repr=False)
    stderr: IO[bytes] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.exitval == 0 and self.signal == 0

    @property
    def status(self) -> int:
        """The job's own exit status as a shell reports it (128 + signal if killed)."""
        return 128 + self.signal if self.signal else self.exitval


class Running:
    """The process groups running now, so that all of them can be stopped at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def add(self, proc: subprocess.Popen[bytes]) -> bool:
        with self._lock:
            if self.stopping:
                return False
            self._procs[proc.pid] = proc
            return True

    def remove(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.pop(proc.pid, None)

    def stop_all(self) -> None:
        """Start nothing more; stop every running group with the TERM-then-KILL sequence."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs.values())
        threads = [threading.Thread(target=terminate_group, args=(p,)) for p in procs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def terminate_group(proc: subprocess.Popen[bytes]) -> None:
    for signum, wait_s in TERM_SEQUENCE:
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait_s)
            # The shell is gone; what it started may not be: the group gets the rest.
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_job(
    result: JobResult,
    *,
    running: Running,
    timeout: float | None,
    retries: int,
    capture: bool,
    env: dict[str, str],
    on_line: Callable[[JobResult, bytes, bool], Any] | None = None,
) -> JobResult:
    """Run the job (again while it fails and has retries left); fill ``result``."""
    for attempt in range(retries + 1):
        result.attempts = attempt + 1
        _run_once(result, running, timeout, capture, env, on_line)
        if result.ok or result.interrupted or running.stopping:
            break
    return result


def _run_once(
    result: JobResult,
    running: Running,
    timeout: float | None,
    capture: bool,
    env: dict[str, str],
    on_line: Callable[[JobResult, bytes, bool], Any] | None,
) -> None:
    out: Any = None
    err: Any = None
    if on_line is not None:
        out = err = subprocess.PIPE
    elif capture:
        for stream in (result.stdout, result.stderr):
            if stream is not None:
                stream.close()
        # Kept open past this function: printed, then closed, by the run.
        result.stdout = out = tempfile.TemporaryFile()  # noqa: SIM115
        result.stderr = err = tempfile.TemporaryFile()  # noqa: SIM115
    result.started_at = time.time()
    started = time.monotonic()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", result.command],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        env=env,
        start_new_session=True,
    )
    if not running.add(proc):
        terminate_group(proc)
        result.interrupted = True
    readers = _line_readers(proc, result, on_line) if on_line is not None else []
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        result.timed_out = True
        terminate_group(proc)
    finally:
        running.remove(proc)
    for reader in readers:
        reader.join()
    result.runtime_s = time.monotonic() - started
    _settle_status(result, proc.returncode, running.stopping)
    for stream in (result.stdout, result.stderr):
        if stream is not None:
            stream.seek(0)


def _settle_status(result: JobResult, code: int, stopping: bool) -> None:
    """GNU parallel's Exitval and Signal: a job conveyor killed (timeout, halt, Ctrl-C) is
    Exitval -1 with the signal; one killed by a signal of its own, Exitval 0 with it."""
    killed = -code if code < 0 else 0
    if result.timed_out or result.interrupted or (stopping and killed):
        result.interrupted = not result.timed_out
        result.exitval, result.signal = -1, killed or signal.SIGTERM
    else:
        result.exitval, result.signal = (0, killed) if killed else (code, 0)


def _line_readers(
    proc: subprocess.Popen[bytes],
    result: JobResult,
    on_line: Callable[[JobResult, bytes, bool], Any],
) -> list[threading.Thread]:
    def pump(stream: IO[bytes], is_err: bool) -> None:
        for line in stream:
            on_line(result, line, is_err)
        stream.close()

    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        threading.Thread(target=pump, args=(proc.stdout, False), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, True), daemon=True),
    ]
    for reader in readers:
        reader.start()
    return readers


__all__ = ["TERM_SEQUENCE", "JobResult", "Running", "run_job", "terminate_group"]
