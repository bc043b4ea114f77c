"""Run CPython's pool and executor tests against conveyor (or the stdlib) and report.

    python -m tools.cpython_compat [--target conveyor|stdlib] [--json PATH] ...

Each test class runs in a child process of its own (tools/cpython_compat/child.py) in a
new process group.  The child streams one event per test; when no event arrives for
``--timeout`` seconds the whole group is killed, the running test is reported as a
timeout, and a new child goes on with the class's remaining tests.  A child that dies is
handled the same way, so one hanging or crashing test costs only itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tools.cpython_compat import interpreters, suites

FAILING = ("failed", "error", "timeout", "crashed", "not run")
POLL_INTERVAL = 0.1


@dataclass
class TestRecord:
    id: str
    source_id: str
    excluded: str | None = None  # why it is not required (see suites.py), or None
    outcome: str = "not run"
    reason: str = ""
    duration: float | None = None
    detail: str = ""

    @property
    def required_failure(self) -> bool:
        return self.excluded is None and self.outcome in FAILING


@dataclass
class SuiteRun:
    name: str
    python: str | None
    note: str
    version: str = ""
    error: str = ""  # why the suite could not run at all
    # "ran", "no interpreter" (no Python >= 3.13 here) or "load error" (e.g. conveyor
    # does not import): only the first lets its tests count.
    status: str = "ran"
    tests: dict[str, TestRecord] = field(default_factory=dict)


@dataclass
class Settings:
    target: str
    start_method: str
    timeout: float
    workdir: Path
    env: dict[str, str]


# --- one test class in a child process ------------------------------------------------


class ClassRun:
    """Runs one class's tests in a child, restarting past a test that hangs or crashes."""

    def __init__(self, suite: SuiteRun, class_id: str, test_ids: list[str], settings: Settings):
        self.suite = suite
        self.class_id = class_id
        self.pending = list(test_ids)
        self.settings = settings
        self.attempt = 0
        self.fixture_errors: list[dict[str, Any]] = []

    def start(self) -> None:
        self.attempt += 1
        stem = f"{self.suite.name}.{self.class_id}.{self.attempt}"
        self.events_path = self.settings.workdir / f"{stem}.events"
        self.log_path = self.settings.workdir / f"{stem}.log"
        self.events_path.touch()
        self.offset = 0
        self.current: str | None = None
        self.started_any = False
        self.last_progress = time.monotonic()
        command = [
            self.suite.python or sys.executable,
            *("-m", "tools.cpython_compat.child"),
            *("--suite", self.suite.name, "--target", self.settings.target),
            *("--start-method", self.settings.start_method),
            *("--timeout", str(self.settings.timeout), "--out", str(self.events_path)),
            "--run",
            *self.pending,
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=interpreters.REPO,
                env=self.settings.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killable as a whole
            )

    def poll(self) -> bool:
        """Advance; True once every test of the class has an outcome."""
        self._read_events()
        if self.process.poll() is not None:
            self._read_events()
            return self._after_exit(_describe_exit(self.process.returncode))
        if time.monotonic() - self.last_progress > self.settings.timeout:
            self._kill_group()
            self.process.wait()
            self._read_events()
            return self._after_exit(f"no progress for {self.settings.timeout:.0f}s", hung=True)
        return False

    def _read_events(self) -> None:
        with open(self.events_path, "rb") as events:
            events.seek(self.offset)
            chunk = events.read()
        # Only whole lines: the child may be halfway through writing the last one.
        complete, newline, _partial = chunk.rpartition(b"\n")
        if not newline:
            return
        self.offset += len(complete) + 1
        for line in complete.decode("utf-8").splitlines():
            self._handle(json.loads(line))

    def _handle(self, event: dict[str, Any]) -> None:
        self.last_progress = time.monotonic()
        kind = event["event"]
        if kind == "start":
            self.current = event["id"]
            self.started_any = True
        elif kind == "result":
            self._record(event["id"], event["outcome"], event["reason"], event["detail"])
            self.suite.tests[event["id"]].duration = event["duration"]
        elif kind == "fixture_error":
            self.fixture_errors.append(event)

    def _record(self, test_id: str, outcome: str, reason: str, detail: str = "") -> None:
        record = self.suite.tests[test_id]
        record.outcome, record.reason, record.detail = outcome, reason, detail
        if test_id in self.pending:
            self.pending.remove(test_id)
        if self.current == test_id:
            self.current = None

    def _after_exit(self, why: str, hung: bool = False) -> bool:
        self._kill_group(grace=0.0 if hung else 2.0)
        log_tail = _tail(self.log_path)
        where = _hang_location(log_tail) if hung else _fatal_error(log_tail)
        if self.current is not None:
            reason = f"{why}; {where}" if where else why
            self._record(self.current, "timeout" if hung else "crashed", reason, log_tail)
        self._record_teardown_errors()
        if not self.pending:
            return True
        if self.started_any:  # progress was made: give the rest a fresh child
            self.start()
            return False
        self._give_up(f"{why} before running it; {where or _last_line(log_tail)}", log_tail)
        return True

    def _give_up(self, why: str, log_tail: str) -> None:
        """The child could not run any test: blame the fixture error, or the exit."""
        setup_errors = [e for e in self.fixture_errors if e["id"].startswith("setUp")]
        if setup_errors:
            reason = f"{setup_errors[0]['id'].split(' ')[0]} failed: {setup_errors[0]['reason']}"
            detail = setup_errors[0]["detail"]
        else:
            reason, detail = why, log_tail
        for test_id in list(self.pending):
            self._record(test_id, "not run", reason, detail)

    def _record_teardown_errors(self) -> None:
        """A tearDownClass/tearDownModule error is a failure of its own."""
        for error in self.fixture_errors:
            fixture = error["id"].split(" ")[0]
            if not fixture.startswith("tearDown"):
                continue
            record_id = f"{self.class_id}.{fixture}"
            self.suite.tests[record_id] = TestRecord(
                id=record_id,
                source_id=record_id,
                excluded=suites.exclusion_reason(self.suite.name, record_id, record_id),
                outcome="error",
                reason=error["reason"],
                detail=error["detail"],
            )
        self.fixture_errors = [e for e in self.fixture_errors if e["id"].startswith("setUp")]

    def _kill_group(self, grace: float = 0.0) -> None:
        """Kill what is left of the child's process group (workers, forkserver, ...).

        After a normal exit, ``grace`` lets helpers such as the resource tracker finish
        their own cleanup before they are killed.
        """
        deadline = time.monotonic() + grace
        while True:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _tail(path: Path, max_chars: int = 6000) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text[-max_chars:]


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"child killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"child killed by signal {-returncode}"
    return f"child exited with code {returncode}"


def _fatal_error(log_tail: str) -> str:
    """The interpreter's own last words, when it died of a fatal error."""
    for line in reversed(log_tail.splitlines()):
        if line.startswith("Fatal Python error"):
            return line.strip()[:200]
    return ""


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _hang_location(log_tail: str) -> str:
    """Where the main thread was stuck, from faulthandler's dump before the kill.

    Names the innermost frame worth reading (in conveyor if any, else the innermost one
    outside the generic waiting code) and the test line that led there.
    """
    dump = log_tail.rpartition("Timeout (")[2]
    threads = dump.split("Thread 0x")
    if len(threads) < 2:
        return ""
    # faulthandler lists threads newest first: the main thread comes last.  Its frames are
    # listed innermost first.
    frames = [_parse_frame(line) for line in threads[-1].splitlines() if "File " in line]
    if not frames:
        return ""
    in_conveyor = [f for f in frames if "conveyor" in f[0] and "cpython_compat" not in f[0]]
    not_waiting = [f for f in frames if os.path.basename(f[0]) not in _WAITING_MODULES]
    in_tests = [f for f in frames if f"{os.sep}test{os.sep}" in f[0]]
    where = (in_conveyor or not_waiting or frames)[0]
    text = f"main thread in {_format_frame(where)}"
    if in_tests and in_tests[0] != where:
        text += f" (from {_format_frame(in_tests[0])})"
    return text


_WAITING_MODULES = {"threading.py", "selectors.py", "connection.py", "queue.py"}


def _parse_frame(line: str) -> tuple[str, str]:
    """('path', 'LINE in FUNC') from a faulthandler line '  File "path", line N in f'."""
    path, _, rest = line.strip()[len('File "') :].partition('", line ')
    return path, rest


def _format_frame(frame: tuple[str, str]) -> str:
    return f"{os.path.basename(frame[0])}:{frame[1]}"


# --- suites ---------------------------------------------------------------------------


def list_suite(suite: SuiteRun, settings: Settings) -> list[tuple[str, list[str]]]:
    """Ask a child for the suite's selected classes; fill suite.tests; return the classes."""
    out = settings.workdir / f"{suite.name}.listing.json"
    command = [
        suite.python or sys.executable,
        *("-m", "tools.cpython_compat.child", "--list", "--out", str(out)),
        *("--suite", suite.name, "--target", settings.target),
        *("--start-method", settings.start_method),
    ]
    result = subprocess.run(
        command,
        cwd=interpreters.REPO,
        env=settings.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0 or not out.exists():
        suite.status = "load error"
        suite.error = f"listing failed: {_last_line(result.stdout + result.stderr)}"
        return []
    listing = json.loads(out.read_text())
    suite.version = listing["version"]
    if listing["error"]:
        suite.status = "load error"
        suite.error = f"cannot load the tests: {_last_line(listing['error'])}"
        return []
    classes = []
    for cls in listing["classes"]:
        to_run = []
        for test in cls["tests"]:
            record = TestRecord(
                id=test["id"],
                source_id=test["source_id"],
                excluded=suites.exclusion_reason(suite.name, test["source_id"], test["id"]),
            )
            suite.tests[test["id"]] = record
            if test["not_run"]:
                record.outcome, record.reason = "skipped", test["not_run"]
            else:
                to_run.append(test["id"])
        classes.append((cls["id"], to_run))
    return classes


def make_suites(args: argparse.Namespace) -> list[SuiteRun]:
    made = []
    for name in args.suite:
        if name == suites.MP_SUITE:
            python = interpreters.mp_python(args.mp_python)
            made.append(SuiteRun(name, python, "test._test_multiprocessing"))
        else:
            python, note = interpreters.futures_python(args.futures_python)
            if python is None:
                suite = SuiteRun(
                    name, None, "test.test_concurrent_futures", error=note, status="no interpreter"
                )
            else:
                suite = SuiteRun(name, python, f"test.test_concurrent_futures; {note}")
            made.append(suite)
    return made


def run_classes(class_runs: list[ClassRun], jobs: int) -> None:
    """Run the classes, ``jobs`` children at a time."""
    waiting = deque(class_runs)
    active: list[ClassRun] = []
    while waiting or active:
        while waiting and len(active) < jobs:
            class_run = waiting.popleft()
            class_run.start()
            active.append(class_run)
        time.sleep(POLL_INTERVAL)
        active = [class_run for class_run in active if not class_run.poll()]


# --- report ---------------------------------------------------------------------------


def suite_summary(suite: SuiteRun) -> dict[str, Any]:
    required = [t for t in suite.tests.values() if t.excluded is None]
    excluded = [t for t in suite.tests.values() if t.excluded is not None]
    return {
        "required_total": len(required),
        "required_passed": sum(t.outcome == "passed" for t in required),
        "required_skipped": sum(t.outcome == "skipped" for t in required),
        "required_failed": sum(t.required_failure for t in required),
        "excluded_total": len(excluded),
        "excluded_passed": sum(t.outcome == "passed" for t in excluded),
    }


def print_report(
    suite_runs: list[SuiteRun], settings: Settings, elapsed: float, kept_logs: bool
) -> None:
    print(
        f"\nCPython compatibility: target={settings.target}, start method={settings.start_method}"
    )
    for suite in suite_runs:
        print(f"\n{suite.name} (Python {suite.version or '?'}: {suite.python}; {suite.note})")
        if suite.error:
            print(f"  NOT RUN: {suite.error}")
            continue
        s = suite_summary(suite)
        print(
            f"  required: {s['required_passed']}/{s['required_total']} passed, "
            f"{s['required_skipped']} skipped, {s['required_failed']} failing; "
            f"not required: {s['excluded_passed']}/{s['excluded_total']}"
            " passed"
        )
        for test in suite.tests.values():
            if test.required_failure:
                print(f"  {test.outcome.upper():8} {test.id}: {test.reason}")
        for test in suite.tests.values():
            if test.excluded is None and test.outcome == "skipped":
                print(f"  skipped  {test.id}: {test.reason[:100]}")
        for test in suite.tests.values():
            if test.excluded is not None and test.outcome != "passed":
                print(f"  (excluded) {test.outcome} {test.id}: {test.reason}")
    logs = f"children's logs in {settings.workdir}" if kept_logs else "all required passed"
    print(f"\nfinished in {elapsed:.1f}s; {logs}")


def write_json(path: str, suite_runs: list[SuiteRun], settings: Settings, elapsed: float) -> None:
    report = {
        "target": settings.target,
        "start_method": settings.start_method,
        "timeout": settings.timeout,
        "elapsed": round(elapsed, 1),
        "suites": {
            suite.name: {
                "python": suite.python,
                "version": suite.version,
                "note": suite.note,
                "status": suite.status,
                "error": suite.error,
                "summary": suite_summary(suite),
                "tests": [
                    {**asdict(test), "required_failure": test.required_failure}
                    for test in suite.tests.values()
                ],
            }
            for suite in suite_runs
        },
        "required_failures": [
            f"{suite.name}::{test.id}"
            for suite in suite_runs
            for test in suite.tests.values()
            if test.required_failure
        ],
    }
    Path(path).write_text(json.dumps(report, indent=2))


# --- entry point ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.cpython_compat",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--target",
        choices=("conveyor", "stdlib"),
        default="conveyor",
        help="run against conveyor's classes (default) or the stdlib's",
    )
    parser.add_argument(
        "--suite",
        action="append",
        choices=suites.SUITES,
        help="suite to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--start-method",
        choices=suites.START_METHODS,
        default="forkserver",
        help="start method for process pools (default: forkserver)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds a test may go without progress (default: 20; the slowest take 6)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="test classes run at once")
    parser.add_argument("--only", metavar="TEXT", help="run only test ids containing TEXT")
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    parser.add_argument("--mp-python", help="interpreter for the multiprocessing suite")
    parser.add_argument(
        "--futures-python", help="interpreter (>= 3.13) for the concurrent.futures suite"
    )
    parser.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the children's logs even when everything passed",
    )
    args = parser.parse_args(argv)
    args.suite = args.suite or list(suites.SUITES)
    return args


def child_env(target: str, start_method: str) -> dict[str, str]:
    env = dict(os.environ)
    # Children (and the forkserver, and spawned workers) import tools.cpython_compat.
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(interpreters.REPO), env.get("PYTHONPATH")])
    )
    env[suites.TARGET_ENV] = target
    env[suites.START_METHOD_ENV] = start_method
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    settings = Settings(
        target=args.target,
        start_method=args.start_method,
        timeout=args.timeout,
        workdir=Path(tempfile.mkdtemp(prefix="cpython_compat-")),
        env=child_env(args.target, args.start_method),
    )
    suite_runs = make_suites(args)
    class_runs = []
    for suite in suite_runs:
        if suite.error:
            continue
        classes = list_suite(suite, settings)
        if args.only:
            suite.tests = {tid: rec for tid, rec in suite.tests.items() if args.only in tid}
        class_runs += [
            ClassRun(suite, class_id, to_run, settings)
            for class_id, test_ids in classes
            if (to_run := [test_id for test_id in test_ids if test_id in suite.tests])
        ]
    run_classes(class_runs, args.jobs)
    elapsed = time.monotonic() - began

    failed = any(t.required_failure for s in suite_runs for t in s.tests.values())
    unavailable = any(s.error for s in suite_runs)
    keep_logs = failed or unavailable or args.keep_logs
    if not keep_logs:
        shutil.rmtree(settings.workdir, ignore_errors=True)
    print_report(suite_runs, settings, elapsed, keep_logs)
    if args.json:
        write_json(args.json, suite_runs, settings, elapsed)
    return 2 if unavailable else int(failed)
