"""Child process of the harness: lists or runs selected CPython tests of one suite.

    python -m tools.cpython_compat.child --suite S --target T --start-method M \\
        --out FILE (--list | --run ID [ID ...]) [--timeout SECONDS]

``--list`` writes the selected classes and tests as JSON.  ``--run`` runs the given tests
(one class per child in practice, so class fixtures run once) and appends one JSON event
per line to FILE as it goes, so the parent knows which test is running if this process
hangs or dies.  The parent owns timeouts; this process only arms faulthandler to dump
every thread's stack shortly before the parent would kill it.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import sys
import time
import traceback
import unittest
from typing import Any, TextIO

from tools.cpython_compat import suites

# Dump stacks this many seconds before the parent's deadline, so the dump is in the log.
DUMP_MARGIN = 3.0


# --- loading the selected tests -------------------------------------------------------


def load_classes(suite: str, start_method: str) -> dict[str, tuple[type, list[str]]]:
    """Map each selected class's id to (class, names of the selected tests)."""
    if suite == suites.MP_SUITE:
        return _load_mp_classes()
    return _load_futures_classes(start_method)


def _load_mp_classes() -> dict[str, tuple[type, list[str]]]:
    # Importing the host applies the target and generates the With* classes.
    from tools.cpython_compat import mp_host

    selected = {}
    for name, methods in suites.MP_SELECTION.items():
        cls = getattr(mp_host, name, None)
        if cls is None:  # not in this Python version's copy of the tests
            continue
        tests = _pick_tests(cls, methods)
        if tests:
            selected[name] = (cls, tests)
    return selected


def _load_futures_classes(start_method: str) -> dict[str, tuple[type, list[str]]]:
    if sys.version_info < (3, 13):
        # The 3.13 package imports names that older test.support lacks (Py_GIL_DISABLED,
        # requires_gil_enabled, ...): the parent runs this suite under Python >= 3.13.
        raise RuntimeError("the concurrent.futures suite needs Python >= 3.13")
    package = "test.test_concurrent_futures"
    util = importlib.import_module(f"{package}.util")
    modules = [importlib.import_module(f"{package}.{name}") for name in suites.FUTURES_MODULES]
    if os.environ.get(suites.TARGET_ENV) == "conveyor":
        from tools.cpython_compat import substitute

        substitute.substitute_executors(util, modules)

    selected = {}
    for module in modules:
        for cls in _test_classes_defined_in(module):
            methods = _futures_methods(cls, util, start_method)
            if methods:
                short_module = module.__name__.rsplit(".", 1)[-1]
                selected[f"{short_module}.{cls.__name__}"] = (cls, methods)
    return selected


def _test_classes_defined_in(module: Any) -> list[type]:
    return [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, unittest.TestCase)
        and value.__module__ == module.__name__
    ]


def _futures_methods(cls: type, util: Any, start_method: str) -> list[str]:
    """The tests of ``cls`` to run: executor variants by mixin, other classes by name."""
    if issubclass(cls, util.ExecutorMixin):
        wanted = (
            getattr(util, suites.FUTURES_THREAD_MIXIN),
            getattr(util, suites.FUTURES_PROCESS_MIXINS[start_method]),
        )
        return _pick_tests(cls, None) if issubclass(cls, wanted) else []
    per_method = suites.FUTURES_PLAIN_SELECTION.get(cls.__name__)
    if per_method is None:
        return []
    return _pick_tests(cls, per_method[start_method])


def _pick_tests(cls: type, methods: tuple[str, ...] | None) -> list[str]:
    names = unittest.TestLoader().getTestCaseNames(cls)
    return [name for name in names if methods is None or name in methods]


def source_id(cls: type, method: str) -> str:
    """``DefiningClass.method``: the class in the MRO whose body defines the test."""
    for klass in cls.__mro__:
        if method in vars(klass):
            return f"{klass.__name__}.{method}"
    return f"{cls.__name__}.{method}"


# --- listing --------------------------------------------------------------------------


def write_listing(args: argparse.Namespace) -> None:
    listing: dict[str, Any] = {
        "python": sys.executable,
        "version": ".".join(map(str, sys.version_info[:3])),
        "classes": [],
        "error": None,
    }
    try:
        classes = load_classes(args.suite, args.start_method)
    except BaseException:
        listing["error"] = traceback.format_exc()
        classes = {}
    for class_id, (cls, methods) in classes.items():
        tests = []
        for method in methods:
            run_id = f"{class_id}.{method}"
            not_run = suites.not_run_reason(args.suite, run_id, sys.version_info[:2])
            tests.append({"id": run_id, "source_id": source_id(cls, method), "not_run": not_run})
        listing["classes"].append({"id": class_id, "tests": tests})
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(listing, out)


# --- running --------------------------------------------------------------------------


class EventResult(unittest.TestResult):
    """Streams one JSON line per test outcome (and per fixture error) to ``stream``."""

    def __init__(self, stream: TextIO, run_ids: dict[str, str], timeout: float) -> None:
        super().__init__()
        self._stream = stream
        self._run_ids = run_ids  # unittest id -> harness run id
        self._timeout = timeout
        self._outcome: dict[str, Any] = {}
        self._started = 0.0

    def emit(self, **event: Any) -> None:
        event["time"] = time.time()
        self._stream.write(json.dumps(event) + "\n")
        self._stream.flush()
        # Every event proves progress: push the stack dump back.
        faulthandler.dump_traceback_later(max(self._timeout - DUMP_MARGIN, 1.0))

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self._outcome = {"outcome": "passed", "reason": "", "detail": ""}
        self._started = time.monotonic()
        self.emit(event="start", id=self._run_id(test))

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        duration = round(time.monotonic() - self._started, 3)
        self.emit(event="result", id=self._run_id(test), duration=duration, **self._outcome)

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):
            self._record("error", err, test)
        else:  # a class or module fixture (unittest's _ErrorHolder)
            self._emit_fixture_error(test, err)

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._record("failed", err, test)

    def addSubTest(self, test: unittest.TestCase, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._record("failed" if failed else "error", err, test, note=str(subtest))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._outcome.update(outcome="skipped", reason=reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._outcome.update(outcome="passed", reason="expected failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._outcome.update(outcome="failed", reason="unexpected success")

    def _record(self, outcome: str, err: Any, test: unittest.TestCase, note: str = "") -> None:
        # Keep the first failure: later ones (e.g. in tearDown) are usually fallout.
        if self._outcome["outcome"] in ("failed", "error"):
            self._outcome["detail"] += "\n" + self._exc_info_to_string(err, test)
            return
        detail = self._exc_info_to_string(err, test)
        reason = summarize_traceback(detail)
        self._outcome.update(
            outcome=outcome, reason=f"{note}: {reason}" if note else reason, detail=detail
        )

    def _emit_fixture_error(self, holder: Any, err: Any) -> None:
        detail = "".join(traceback.format_exception(*err))
        self.emit(
            event="fixture_error",
            id=holder.id(),
            reason=summarize_traceback(detail),
            detail=detail,
        )

    def _run_id(self, test: unittest.TestCase) -> str:
        return self._run_ids.get(test.id(), test.id())


def summarize_traceback(detail: str) -> str:
    """One line: the first line of the final exception, plus where it was raised."""
    lines = detail.rstrip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if not frames:
        return (lines[-1].strip() if lines else "")[:300]
    # After the innermost frame come its source (and caret) lines, indented, then the
    # exception, whose message may go on over several lines: keep its first line.
    exception_lines = [line for line in lines[frames[-1] + 1 :] if not line.startswith(" ")]
    message = exception_lines[0].strip() if exception_lines else lines[-1].strip()
    path, _, rest = lines[frames[-1]].strip()[len('File "') :].partition('", line ')
    return f"{message} (at {os.path.basename(path)}:{rest.split(',')[0]})"[:300]


def cap_short_timeout(timeout: float) -> None:
    """Let tests that wait support.SHORT_TIMEOUT (30 s) fail by themselves before we kill.

    regrtest caps it the same way when given a short --timeout.  LONG_TIMEOUT (300 s) is
    left alone: tests wait that long only for a deadlock, which the parent reports.
    """
    from test import support

    support.SHORT_TIMEOUT = min(support.SHORT_TIMEOUT, timeout / 2)


def run_tests(args: argparse.Namespace) -> None:
    cap_short_timeout(args.timeout)
    classes = load_classes(args.suite, args.start_method)
    suite = unittest.TestSuite()
    run_ids = {}
    for run_id in args.run:
        class_id, _, method = run_id.rpartition(".")
        cls = classes[class_id][0]
        test = cls(method)
        run_ids[test.id()] = run_id
        suite.addTest(test)

    with open(args.out, "a", encoding="utf-8") as events:
        result = EventResult(events, run_ids, args.timeout)
        result.emit(event="begin", pid=os.getpid())
        suite.run(result)
        result.emit(event="done")
    faulthandler.cancel_dump_traceback_later()


# --- entry point ----------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=suites.SUITES, required=True)
    parser.add_argument("--target", choices=("conveyor", "stdlib"), required=True)
    parser.add_argument("--start-method", choices=suites.START_METHODS, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true")
    action.add_argument("--run", nargs="+", metavar="ID")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # Set before any test module is imported: mp_host and our own children read them.
    os.environ[suites.TARGET_ENV] = args.target
    os.environ[suites.START_METHOD_ENV] = args.start_method
    faulthandler.enable(all_threads=True)
    if args.list:
        write_listing(args)
    else:
        run_tests(args)


if __name__ == "__main__":
    main()
