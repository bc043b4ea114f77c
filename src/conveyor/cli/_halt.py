"""``--halt when,why``: when to stop a run early, and the exit status that says so.

``when`` is ``now`` (stop the running jobs too) or ``soon`` (start nothing new, let the
running ones finish); ``why`` is ``fail=N``, ``fail=N%``, ``success=...`` or ``done=...``.
GNU parallel's exit status: the number of failed jobs (101 above 100); under ``--halt``
with ``fail=1`` or ``done=1``, the triggering job's own status; with a percentage, the
percentage of failures, rounded up; ``success=...``, 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ._job import JobResult

_SPEC = re.compile(r"^(now|soon),(fail|success|done)=(\d+(?:\.\d+)?)(%?)$")


class HaltSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Halt:
    when: str  # "now" | "soon"
    why: str  # "fail" | "success" | "done"
    count: float
    percent: bool

    @classmethod
    def parse(cls, text: str) -> Halt | None:
        if text in ("never", "0"):
            return None
        legacy = {
            "1": "soon,fail=1",
            "2": "now,fail=1",
            "-1": "soon,success=1",
            "-2": "now,success=1",
        }
        match = _SPEC.match(legacy.get(text, text))
        if match is None:
            raise HaltSyntaxError(
                f"--halt {text!r}: expected now|soon,fail|success|done=N or N% (e.g. now,fail=1)"
            )
        when, why, count, percent = match.groups()
        return cls(when, why, float(count), bool(percent))

    def stops_at(self, job: JobResult, done: int, failed: int, total: int | None) -> bool:
        """Whether ``job``, just ended (counted in ``done``/``failed``), stops the run."""
        if (self.why == "fail" and job.ok) or (self.why == "success" and not job.ok):
            return False
        return self.triggered(done, failed, total)

    def triggered(self, done: int, failed: int, total: int | None) -> bool:
        counted = {"fail": failed, "success": done - failed, "done": done}[self.why]
        if self.percent:
            if not total:
                return False
            return counted * 100 >= self.count * total
        return counted >= self.count


def exit_status(failed: int, total: int, halt: Halt | None, trigger: JobResult | None) -> int:
    if trigger is not None and halt is not None:
        if halt.why == "success":
            return 0
        if not halt.percent and halt.count == 1:
            return trigger.status
        if halt.percent and total:
            return math.ceil(failed * 100 / total)
    return min(failed, 101)


__all__ = ["Halt", "HaltSyntaxError", "exit_status"]
