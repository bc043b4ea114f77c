"""``--joblog``: GNU parallel's 9 tab-separated columns, so existing tools read it.

``Seq Host Starttime JobRuntime Send Receive Exitval Signal Command``: one line per job,
after its output was printed (so a crash never logs a job whose output was lost), once
per job whatever its retries, flushed line by line. Newlines in a command are written as
``\\0`` so that each job stays on one line. ``+FILE`` appends; ``-`` is stdout.
"""

from __future__ import annotations

import os
import sys
from typing import IO

from ._job import JobResult

HEADER = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"


class JobLog:
    def __init__(self, target: str) -> None:
        append = target.startswith("+")
        path = target[1:] if append else target
        self._owned = path != "-"
        mode = "a" if append else "w"
        self._file: IO[str] = (
            open(path, mode, encoding="utf-8") if self._owned else sys.stdout  # noqa: SIM115
        )
        if not append or self._file.tell() == 0:
            self._file.write(HEADER)
            self._file.flush()

    def write(self, job: JobResult) -> None:
        command = job.command.replace("\n", "\0")
        self._file.write(
            f"{job.seq}\t:\t{job.started_at:.3f}\t{job.runtime_s:10.3f}\t0\t0\t"
            f"{job.exitval}\t{job.signal}\t{command}\n"
        )
        self._file.flush()

    def close(self) -> None:
        if self._owned:
            self._file.close()


def open_joblog(target: str | None, resume: str | None) -> JobLog | None:
    """The run's job log, if it has one; a resume appends to it, as GNU parallel's does."""
    if target is None:
        return None
    path = target.lstrip("+")
    if resume and path != "-" and os.path.exists(path):
        target = "+" + path
    return JobLog(target)


__all__ = ["HEADER", "JobLog", "open_joblog"]
