"""What a resumed run skips, from the journal (by fingerprint) or the job log (by seq).

- ``--resume``: skip every job that finished (succeeded or failed), as GNU parallel does;
- ``--resume-failed``: skip only the jobs that succeeded;
- ``--retry-failed``: ignore the command line; run again the journal's (or the log's)
  commands that did not succeed.

With a journal, a job is matched by its fingerprint wherever it now stands in the input;
a job whose position the journal had for another command is counted, and the run says
the input changed (GNU parallel would have skipped it, or run the wrong one). Without a
journal (a GNU parallel log), jobs are matched by seq, GNU's way, with a warning.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from ._journal import Entry, Journal, fingerprint, read_joblog


@dataclass
class Resume:
    mode: str | None
    done: set[str] = field(default_factory=set)  # fingerprints to skip
    done_seqs: set[int] | None = None  # without a journal: seqs to skip
    seq_keys: dict[int, str] = field(default_factory=dict)  # the journal's seq -> fingerprint
    retry: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, command, key)
    skipped: int = 0
    changed: int = 0

    def skips(self, seq: int, key: str) -> bool:
        if self.done_seqs is not None:
            hit = seq in self.done_seqs
        else:
            hit = key in self.done
            recorded = self.seq_keys.get(seq)
            if not hit and recorded is not None and recorded != key:
                self.changed += 1
        self.skipped += hit
        return hit

    def report(self) -> None:
        if self.mode is None or self.mode == "retry-failed":
            return
        print(
            f"conveyor run: --{self.mode}: {self.skipped} jobs already done, skipped",
            file=sys.stderr,
        )
        if self.changed:
            print(
                f"conveyor run: the input changed since the journal was written: {self.changed} "
                "jobs stand where the journal had other commands (matched by content, so they "
                "ran; GNU parallel's --resume, by position, would have skipped them)",
                file=sys.stderr,
            )


def load(mode: str | None, joblog: str | None, journal: Journal | None) -> Resume:
    resume = Resume(mode)
    if mode is None or joblog is None:
        return resume
    entries = journal.entries() if journal is not None else {}
    if entries:
        _from_journal(resume, entries)
    elif os.path.exists(joblog.lstrip("+")):
        _from_joblog(resume, joblog.lstrip("+"))
    return resume


def _from_journal(resume: Resume, entries: dict[str, Entry]) -> None:
    resume.seq_keys = {e.seq: key for key, e in entries.items()}
    if resume.mode == "retry-failed":
        resume.retry = sorted(
            (e.seq, e.command, key) for key, e in entries.items() if e.state != "succeeded"
        )
        return
    finished = {"succeeded", "failed"} if resume.mode == "resume" else {"succeeded"}
    resume.done = {key for key, e in entries.items() if e.state in finished}


def _from_joblog(resume: Resume, path: str) -> None:
    jobs, warning = read_joblog(path)
    if warning:
        print(f"conveyor run: {warning}", file=sys.stderr)
    print(
        f"conveyor run: {path} has no journal beside it: jobs are matched by position, as "
        "GNU parallel matches them (the input must not have changed)",
        file=sys.stderr,
    )
    if resume.mode == "retry-failed":
        failed = [(seq, cmd) for seq, (code, sig, cmd) in jobs.items() if code or sig]
        resume.retry = sorted((seq, cmd, fingerprint(cmd, (), None)) for seq, cmd in failed)
        return
    if resume.mode == "resume":
        resume.done_seqs = set(jobs)
    else:
        resume.done_seqs = {seq for seq, (code, sig, _) in jobs.items() if not code and not sig}


__all__ = ["Resume", "load"]
