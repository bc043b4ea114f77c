"""The journal that makes ``--resume`` safe: each job by its fingerprint, in sqlite.

GNU parallel resumes by sequence number alone: change the input and it may skip the wrong
jobs. conveyor keeps, beside the job log (``LOG.journal``, the stdlib's ``sqlite3`` in WAL
mode), a row per job keyed by a *fingerprint*, a hash of the command template and the
job's arguments: its state (``running`` from its start, then ``succeeded``, ``failed`` or
``interrupted``), attempts and outcome. A resume skips jobs by fingerprint, whatever their
position now, and says when the input changed. A job that was running when conveyor was
killed is still ``running`` in the journal, and runs again.

The job log itself is read too (a GNU parallel log, or one whose journal is gone), by
sequence number as GNU does; a last line cut short by a crash is ignored with a warning,
a malformed line anywhere else is an error.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass

from ._job import JobResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    fingerprint TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    command TEXT NOT NULL,
    state TEXT NOT NULL,
    exitval INTEGER,
    signal INTEGER,
    attempts INTEGER,
    started_at REAL,
    runtime_s REAL
)
"""


def journal_for(joblog: str | None, resume: str | None) -> Journal | None:
    """The journal beside a job log file (none for ``--joblog -``); emptied when the run
    starts the log afresh (neither resuming nor appending), as the log itself is."""
    if joblog is None or joblog.lstrip("+") == "-":
        return None
    journal = Journal(joblog.lstrip("+") + ".journal")
    if resume is None and not joblog.startswith("+"):
        journal.reset()
    return journal


def fingerprint(template: str, arguments: tuple[str, ...], seq: int | None) -> str:
    """The job's identity across runs: its template and arguments (and its position, if
    the template uses ``{#}``, which makes the position part of the command)."""
    parts = [template, *arguments] + ([str(seq)] if seq is not None else [])
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    seq: int
    command: str
    state: str


class Journal:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def reset(self) -> None:
        """Forget every job: a new run that truncates its log starts a new journal too."""
        with self._lock:
            self._db.execute("DELETE FROM jobs")

    def entries(self) -> dict[str, Entry]:
        with self._lock:
            rows = self._db.execute("SELECT fingerprint, seq, command, state FROM jobs").fetchall()
        return {f: Entry(seq, command, state) for f, seq, command, state in rows}

    def started(self, job: JobResult, key: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (fingerprint, seq, command, state, attempts, started_at) "
                "VALUES (?, ?, ?, 'running', 0, ?) ON CONFLICT(fingerprint) DO UPDATE SET "
                "seq = excluded.seq, command = excluded.command, state = 'running'",
                (key, job.seq, job.command, job.started_at),
            )

    def finished(self, job: JobResult, key: str) -> None:
        """The job's outcome (a row of its own if its start was not recorded)."""
        state = "succeeded" if job.ok else "interrupted" if job.interrupted else "failed"
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (fingerprint, seq, command, state, exitval, signal, attempts, "
                "started_at, runtime_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(fingerprint) DO UPDATE SET seq = excluded.seq, "
                "command = excluded.command, state = excluded.state, "
                "exitval = excluded.exitval, signal = excluded.signal, "
                "attempts = excluded.attempts, started_at = excluded.started_at, "
                "runtime_s = excluded.runtime_s",
                (
                    key,
                    job.seq,
                    job.command,
                    state,
                    job.exitval,
                    job.signal,
                    job.attempts,
                    job.started_at,
                    job.runtime_s,
                ),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JobLogFormatError(ValueError):
    pass


def read_joblog(path: str) -> tuple[dict[int, tuple[int, int, str]], str | None]:
    """The jobs a GNU-format job log records, by seq: (exitval, signal, command); and a
    warning when its last line was cut short (that line is ignored)."""
    with open(path, encoding="utf-8", newline="") as file:
        text = file.read()
    lines = text.split("\n")
    cut = lines[-1] if lines and lines[-1] else None
    lines = lines[:-1]
    jobs: dict[int, tuple[int, int, str]] = {}
    for number, line in enumerate(lines, 1):
        if number == 1 and line.startswith("Seq\t"):
            continue
        fields = line.split("\t", 8)
        try:
            if len(fields) != 9:
                raise ValueError
            jobs[int(fields[0])] = (int(fields[6]), int(fields[7]), fields[8].replace("\0", "\n"))
        except ValueError:
            raise JobLogFormatError(
                f"{path}, line {number}: not a job log line (9 tab-separated columns, "
                f"the 1st, 7th and 8th numbers): {line[:120]!r}"
            ) from None
    warning = None
    if cut is not None:
        warning = f"{path}: its last line was cut short (a crash?) and is ignored: {cut[:80]!r}"
    return jobs, warning


__all__ = ["Entry", "JobLogFormatError", "Journal", "fingerprint", "journal_for", "read_joblog"]
