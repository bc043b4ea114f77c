"""What each process pool does in the same fault, measured on this machine.

The peers' column of ``docs/reliability.md``. Run from the repository root, in the
benchmark venv::

    .venv-bench/bin/python -m benchmarks.peer_faults                  # everything, ~4 min
    .venv-bench/bin/python -m benchmarks.peer_faults --engines pebble,mpire --scenarios crash

Each (engine, scenario) case runs in a process of its own, in a new session, under a hard
timeout. Afterwards the harness kills that process group and every descendant it saw
(psutil polls the case's process tree while it runs; workers also log their pids), and
checks that none is left, so a hang or an orphan costs one case and never leaks into the
next. Prints a markdown table (rows: scenarios, columns: engines) and writes
``benchmarks/results/peer_faults.json``.

Every engine runs 2 workers with its library's default start method.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "peer_faults.json"

WORKERS = 2
TASKS = 10  # tasks submitted in the bad-task scenarios, the bad one among them
BAD_INDEX = 4
TASK_SECONDS = 0.2  # a normal task
RESULT_WAIT = 6.0  # no result this long after submission counts as a hang
PROBE_WAIT = 5.0  # the same, for the task that checks whether the pool is still usable
TASK_TIMEOUT = 2.0  # the per-task timeout asked for, where the library has one
STUCK_SECONDS = 60
SLOW_SECONDS = 30  # the running tasks of the parent-kill and Ctrl-C scenarios
INIT_WINDOW = 3.0  # how long a failing initializer is watched
ORPHAN_DELAY = 3.0  # after the parent's SIGKILL
SIGINT_CHECK = 2.0  # after Ctrl-C, when the workers are counted
SIGINT_WINDOW = 15.0  # after Ctrl-C, how long the case may take to end
CASE_TIMEOUT = 25.0  # hard limit of a case (the Ctrl-C case: start-up plus SIGINT_WINDOW)
START_TIMEOUT = 15.0  # for the pool to get its tasks running
EVENT = "@@peer_faults"
PIDS = "pids"  # the file each worker appends its pid to, in the case's directory

SCENARIOS = {
    "crash": "1. worker SIGKILLed mid-task (1 of 10 tasks)",
    "stuck": "2. stuck task (sleeps 60 s), per-task timeout 2 s if any",
    "sys_exit": "3. task calls sys.exit(3) (1 of 10 tasks)",
    "parent_kill": "4. parent SIGKILLed while 2 tasks run",
    "ctrl_c": "5. Ctrl-C (SIGINT to the process group) during map",
    "initializer": "6. initializer raises",
    "unpicklable": "7. unpicklable argument (a threading.Lock) to 1 of 10 tasks",
}


# --- tasks: these run in the workers ------------------------------------------------------


def square(x: int) -> int:
    time.sleep(TASK_SECONDS)
    return x * x


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def exit_3() -> None:
    sys.exit(3)


def log_pid(directory: str) -> None:
    fd = os.open(os.path.join(directory, PIDS), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def logged_sleep(directory: str, seconds: float) -> float:
    log_pid(directory)
    time.sleep(seconds)
    return seconds


def failing_initializer(directory: str) -> None:
    log_pid(directory)
    raise ValueError("this initializer fails on purpose")


def read_pids(directory: str | Path) -> list[int]:
    try:
        text = Path(directory, PIDS).read_text()
    except FileNotFoundError:
        return []
    return list(dict.fromkeys(int(line) for line in text.split()))


def is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- adapters: one per engine, the same small interface -----------------------------------


class NoResult(Exception):
    """The wait ran out and the task has not finished."""


class Engine:
    """A pool of WORKERS processes. Handles are whatever the library's submit returns."""

    label = ""
    timeout_api = ""  # how the library asks for a per-task timeout; "" if it has none
    wait_call = "result(timeout=1)"  # the library's bounded wait, as the caller writes it

    def __init__(
        self,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        task_timeout: float | None = None,
    ) -> None:
        raise NotImplementedError

    pool: Any

    def start_method(self) -> str:
        return multiprocessing.get_start_method()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def wait(self, handle: Any, timeout: float) -> bool:
        """Wait up to ``timeout`` s; True if the task has finished."""
        raise NotImplementedError

    def outcome(self, handle: Any) -> Any:
        """The finished task's result, or raise its error."""
        raise NotImplementedError

    def native_wait(self, handle: Any, timeout: float) -> Any:
        """The library's own bounded wait (``result(timeout=)`` or ``get(timeout=)``)."""
        raise NotImplementedError

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        raise NotImplementedError

    def terminate(self) -> None:
        """Stop now, dropping queued work (used to clean up after a measurement)."""
        raise NotImplementedError

    def reopen(self) -> Engine | None:
        """The library's way to get a working pool again after a break, if it has one."""
        return None

    def result(self, handle: Any, timeout: float) -> Any:
        if not self.wait(handle, timeout):
            raise NoResult
        return self.outcome(handle)


class FuturesEngine(Engine):
    """Engines whose handles are ``concurrent.futures.Future`` objects."""

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def wait(self, handle, timeout):
        futures.wait([handle], timeout)
        return handle.done()

    def outcome(self, handle):
        return handle.result(timeout=0)

    def native_wait(self, handle, timeout):
        return handle.result(timeout=timeout)

    def map(self, fn, items):
        return list(self.pool.map(fn, items))

    def terminate(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


class AsyncResultEngine(Engine):
    """Engines with the ``multiprocessing.Pool`` API (``apply_async`` and ``AsyncResult``)."""

    wait_call = "get(timeout=1)"

    def submit(self, fn, *args):
        return self.pool.apply_async(fn, args)

    def wait(self, handle, timeout):
        handle.wait(timeout)
        return handle.ready()

    def outcome(self, handle):
        return handle.get(0)

    def native_wait(self, handle, timeout):
        return handle.get(timeout)

    def map(self, fn, items):
        return self.pool.map(fn, items)

    def terminate(self):
        self.pool.terminate()


class MpPool(AsyncResultEngine):
    label = "multiprocessing.Pool"

    def __init__(self, initializer=None, initargs=(), task_timeout=None):
        self.pool = multiprocessing.Pool(WORKERS, initializer, initargs)

    def start_method(self):
        return self.pool._ctx.get_start_method()


class CfExecutor(FuturesEngine):
    label = "concurrent.futures.ProcessPoolExecutor"

    def __init__(self, initializer=None, initargs=(), task_timeout=None):
        self.pool = futures.ProcessPoolExecutor(WORKERS, initializer=initializer, initargs=initargs)

    def start_method(self):
        return self.pool._mp_context.get_start_method()


class Loky(FuturesEngine):
    label = "loky.get_reusable_executor"

    def __init__(self, initializer=None, initargs=(), task_timeout=None):
        import loky

        self.pool = loky.get_reusable_executor(
            max_workers=WORKERS, initializer=initializer, initargs=initargs
        )

    def start_method(self):
        return self.pool._context.get_start_method()

    def terminate(self):
        self.pool.shutdown(wait=False, kill_workers=True)  # loky has no cancel_futures

    def reopen(self):
        # loky's documented pattern: ask get_reusable_executor() again; it replaces a broken
        # executor with a new one.
        return Loky()


class Pebble(FuturesEngine):
    label = "pebble.ProcessPool"
    timeout_api = "schedule(timeout=2)"

    def __init__(self, initializer=None, initargs=(), task_timeout=None):
        import pebble

        self.pool = pebble.ProcessPool(
            max_workers=WORKERS, initializer=initializer, initargs=initargs
        )
        self.task_timeout = task_timeout

    def submit(self, fn, *args):
        return self.pool.schedule(fn, args=args, timeout=self.task_timeout)

    def map(self, fn, items):
        return list(self.pool.map(fn, items).result())

    def terminate(self):
        self.pool.stop()
        self.pool.join(timeout=3)


class Mpire(AsyncResultEngine):
    label = "mpire.WorkerPool"
    timeout_api = "apply_async(task_timeout=2)"

    def __init__(self, initializer=None, initargs=(), task_timeout=None):
        from mpire import WorkerPool

        self.pool = WorkerPool(n_jobs=WORKERS)
        # mpire takes the initializer (worker_init) and the timeout with each call.
        self.options = {
            "worker_init": functools.partial(initializer, *initargs) if initializer else None,
            "task_timeout": task_timeout,
        }

    def start_method(self):
        from mpire.context import DEFAULT_START_METHOD

        return DEFAULT_START_METHOD

    def submit(self, fn, *args):
        return self.pool.apply_async(fn, args, **self.options)

    def map(self, fn, items):
        return self.pool.map(fn, items, **self.options)


class ConveyorPool(AsyncResultEngine):
    label = "conveyor.Pool"
    timeout_api = "Pool(task_timeout=2)"

    def __init__(self, initializer=None, initargs=(), task_timeout=None):
        import conveyor

        self.pool = conveyor.Pool(WORKERS, initializer, initargs, task_timeout=task_timeout)

    def start_method(self):
        return "forkserver"  # conveyor's default on POSIX (see conveyor/_process.py)


class ConveyorExecutor(FuturesEngine):
    label = "conveyor.ProcessPoolExecutor"
    timeout_api = "ProcessPoolExecutor(task_timeout=2)"

    def __init__(self, initializer=None, initargs=(), task_timeout=None):
        import conveyor

        self.pool = conveyor.ProcessPoolExecutor(
            WORKERS, initializer=initializer, initargs=initargs, task_timeout=task_timeout
        )

    def start_method(self):
        return "forkserver"


ENGINES: dict[str, type[Engine]] = {
    "mp_pool": MpPool,
    "cf_executor": CfExecutor,
    "loky": Loky,
    "pebble": Pebble,
    "mpire": Mpire,
    "conveyor_pool": ConveyorPool,
    "conveyor_executor": ConveyorExecutor,
}


# --- the case process: one scenario on one engine -----------------------------------------


def emit(name: str, payload: Any = None) -> None:
    print(f"{EVENT} {name} {json.dumps(payload)}", flush=True)


def error_name(error: BaseException) -> str:
    if type(error) is SystemExit:
        return f"SystemExit({error.code})"
    return type(error).__name__


def settle(engine: Engine, handle: Any, deadline: float) -> str:
    """'ok', 'no result' (still not finished at the deadline), or the error's type."""
    if isinstance(handle, BaseException):  # submit itself raised
        return f"submit() raises {error_name(handle)}"
    try:
        engine.result(handle, max(0.0, deadline - time.monotonic()))
    except NoResult:
        return "no result"
    except BaseException as error:  # SystemExit too: some libraries re-raise it here
        return error_name(error)
    return "ok"


def error_text(engine: Engine, handle: Any) -> str | None:
    """The message of a finished task's error, for the JSON (None if it did not fail)."""
    if isinstance(handle, BaseException):
        return f"{type(handle).__name__}: {handle}"
    try:
        if engine.wait(handle, 0):
            engine.outcome(handle)
    except BaseException as error:
        return f"{type(error).__name__}: {error}"[:300]
    return None


def tally(fates: list[str]) -> str:
    return ", ".join(f"{count} {fate}" for fate, count in Counter(fates).most_common())


def probe(engine: Engine) -> str:
    """Is the pool still usable: does one more task run?"""
    try:
        handle = engine.submit(square, 7)
    except BaseException as error:
        verdict = f"unusable (submit raises {error_name(error)})"
    else:
        fate = settle(engine, handle, time.monotonic() + PROBE_WAIT)
        verdict = {"ok": "usable", "no result": "unusable (a new task hangs)"}.get(
            fate, f"unusable (a new task fails: {fate})"
        )
    if verdict != "usable":
        verdict += reopen_note(engine)
    return verdict


def reopen_note(engine: Engine) -> str:
    try:
        fresh = engine.reopen()
    except BaseException as error:
        return f"; reopening raises {error_name(error)}"
    if fresh is None:
        return ""
    fate = settle(fresh, fresh.submit(square, 7), time.monotonic() + PROBE_WAIT)
    if fate == "ok":
        return "; calling it again gives a fresh, working executor"
    return f"; calling it again gives an executor whose task ends in: {fate}"


def submit_all(engine: Engine, bad: tuple[Callable[..., Any], tuple[Any, ...]]) -> list[Any]:
    handles: list[Any] = []
    for i in range(TASKS):
        fn, args = bad if i == BAD_INDEX else (square, (i,))
        try:
            handles.append(engine.submit(fn, *args))
        except BaseException as error:
            handles.append(error)
    return handles


def bad_task_phrase(fate: str) -> str:
    if fate == "no result":
        return f"no result after {RESULT_WAIT:g} s (hangs)"
    if fate.startswith("submit()"):
        return fate
    return "returns normally" if fate == "ok" else f"raises {fate}"


def one_bad_task(
    cls: type[Engine], what: str, bad: tuple[Callable[..., Any], tuple[Any, ...]]
) -> tuple[dict[str, Any], Engine]:
    engine = cls()
    handles = submit_all(engine, bad)
    deadline = time.monotonic() + RESULT_WAIT
    fates = [settle(engine, handle, deadline) for handle in handles]
    bad_fate = fates.pop(BAD_INDEX)
    usable = probe(engine)
    outcome = f"{what} {bad_task_phrase(bad_fate)}; other 9: {tally(fates)}; pool {usable}"
    details = {
        "bad_task": bad_fate,
        "bad_task_error": error_text(engine, handles[BAD_INDEX]),
        "others": fates,
        "usable": usable,
    }
    return {"outcome": outcome, **details}, engine


def scenario_crash(cls: type[Engine], directory: str):
    return one_bad_task(cls, "crashed task", (kill_self, ()))


def scenario_sys_exit(cls: type[Engine], directory: str):
    return one_bad_task(cls, "sys.exit(3) task", (exit_3, ()))


def scenario_unpicklable(cls: type[Engine], directory: str):
    return one_bad_task(cls, "Lock-argument task", (square, (threading.Lock(),)))


def scenario_stuck(cls: type[Engine], directory: str):
    if not cls.timeout_api:
        return stuck_without_timeout(cls, directory)
    engine = cls(task_timeout=TASK_TIMEOUT)
    start = time.monotonic()
    handle = engine.submit(logged_sleep, directory, STUCK_SECONDS)
    fate = settle(engine, handle, start + TASK_TIMEOUT + RESULT_WAIT)
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    running = [pid for pid in read_pids(directory) if is_alive(pid)]
    worker = "still running the task" if running else "stopped"
    usable = probe(engine)
    if fate == "no result":
        fate_text = f"no result after {elapsed:.0f} s"
    else:
        fate_text = f"raises {fate} after {elapsed:.1f} s"
    outcome = f"{cls.timeout_api}: {fate_text}; stuck worker {worker}; pool {usable}"
    return {"outcome": outcome, "fate": fate, "seconds": round(elapsed, 2)}, engine


def stuck_without_timeout(cls: type[Engine], directory: str):
    engine = cls()
    handle = engine.submit(logged_sleep, directory, STUCK_SECONDS)
    engine.wait(handle, 0.5)  # let it start
    start = time.monotonic()
    try:
        engine.native_wait(handle, 1.0)
        fate = "returns"
    except BaseException as error:
        fate = error_name(error)
    elapsed = time.monotonic() - start
    time.sleep(2.0)
    still_busy = not engine.wait(handle, 0) and any(map(is_alive, read_pids(directory)))
    busy = "still running it 2 s later" if still_busy else "not running it 2 s later"
    outcome = (
        f"no per-task timeout; {cls.wait_call} raises {fate} after {elapsed:.1f} s, "
        f"the worker {busy}"
    )
    return {"outcome": outcome, "fate": fate, "worker_busy_after": still_busy}, engine


def scenario_initializer(cls: type[Engine], directory: str):
    start = time.monotonic()
    engine = None
    try:
        engine = cls(initializer=failing_initializer, initargs=(directory,))
        handle = engine.submit(square, 1)
    except BaseException as error:
        handle = error
    fate = settle(engine, handle, start + INIT_WINDOW) if engine else "constructor raises"
    elapsed = time.monotonic() - start
    time.sleep(max(0.0, start + INIT_WINDOW - time.monotonic()))
    starts = len(read_pids(directory))
    if fate == "no result":
        fate_text = f"task: no result after {INIT_WINDOW:g} s"
    else:
        fate_text = f"task {bad_task_phrase(fate)} after {elapsed:.1f} s"
    loop = " (respawn loop)" if starts > 3 * WORKERS else ""
    outcome = f"{fate_text}; {starts} worker starts in {INIT_WINDOW:g} s{loop}"
    return {"outcome": outcome, "fate": fate, "worker_starts": starts}, engine


def wait_for_workers(directory: str, count: int) -> list[int]:
    deadline = time.monotonic() + START_TIMEOUT
    while len(read_pids(directory)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return read_pids(directory)


def scenario_parent_kill(cls: type[Engine], directory: str):
    engine = cls()
    handles = [engine.submit(logged_sleep, directory, SLOW_SECONDS) for _ in range(WORKERS)]
    emit("ready", {"workers": wait_for_workers(directory, WORKERS)})
    time.sleep(STUCK_SECONDS)  # the harness SIGKILLs this process now
    return {"outcome": "not killed", "handles": len(handles)}, engine


def scenario_ctrl_c(cls: type[Engine], directory: str):
    """Written as a user would: map inside ``with pool:``, except KeyboardInterrupt outside."""
    engine = cls()
    emit("ready", {})  # not None: the harness reads a None payload as "no event"
    slow = functools.partial(logged_sleep, directory)
    try:
        with engine.pool:
            try:
                engine.map(slow, [SLOW_SECONDS] * (3 * WORKERS))
                emit("map_returned", time.monotonic())
            except KeyboardInterrupt:
                emit("map_interrupted", time.monotonic())
                raise
    except KeyboardInterrupt:
        emit("caught", time.monotonic())
    return None, engine


CASES: dict[str, Callable[[type[Engine], str], tuple[dict[str, Any] | None, Engine | None]]] = {
    "crash": scenario_crash,
    "stuck": scenario_stuck,
    "sys_exit": scenario_sys_exit,
    "parent_kill": scenario_parent_kill,
    "ctrl_c": scenario_ctrl_c,
    "initializer": scenario_initializer,
    "unpicklable": scenario_unpicklable,
}


def clean_up(engine: Engine | None) -> None:
    """Terminate the pool, but give up after 3 s: the harness kills what is left anyway."""
    if engine is not None:
        stopper = threading.Thread(target=engine.terminate, daemon=True)
        stopper.start()
        stopper.join(3.0)


def run_in_case_process(engine_key: str, scenario: str, directory: str) -> None:
    cls = ENGINES[engine_key]
    report, engine = CASES[scenario](cls, directory)
    if scenario == "ctrl_c":
        return  # the interpreter's own exit is part of what is measured
    report = report or {}
    report["start_method"] = engine.start_method() if engine else "?"
    emit("result", report)
    clean_up(engine)
    os._exit(0)  # skip the libraries' exit handlers: some would wait for a stuck task


# --- the harness: runs each case in its own session and observes it -----------------------


class Events:
    """The case's stdout, read by a thread: EVENT lines become (name, payload) items."""

    def __init__(self, stream: Any) -> None:
        self.items: queue.Queue[tuple[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            if line.startswith(EVENT + " "):
                _, name, payload = line.rstrip("\n").split(" ", 2)
                self.items.put((name, json.loads(payload)))
        self.items.put(("eof", None))

    def expect(self, name: str, timeout: float) -> Any:
        """The payload of the next ``name`` event; None at end of output or timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                got, payload = self.items.get(timeout=left)
            except queue.Empty:
                return None
            if got == name:
                return payload
            if got == "eof":
                self.items.put((got, payload))  # stays visible to later calls
                return None
        return None

    def drain(self) -> dict[str, Any]:
        found = {}
        with contextlib.suppress(queue.Empty):
            while True:
                name, payload = self.items.get_nowait()
                found[name] = payload
        return found


class Tracker:
    """Remembers every descendant of the case process, to kill what is left at the end."""

    def __init__(self, pid: int, directory: str) -> None:
        self.root = psutil.Process(pid)
        self.directory = directory
        self.seen: dict[int, psutil.Process] = {pid: self.root}
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while self.running:
            self.snapshot()
            time.sleep(0.05)

    def snapshot(self) -> None:
        for process in list(self.seen.values()):
            with contextlib.suppress(psutil.Error):
                for child in process.children(recursive=True):
                    self.seen.setdefault(child.pid, child)
        for pid in read_pids(self.directory):  # workers too short-lived for the poll
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                if process.create_time() >= self.root.create_time():
                    self.seen.setdefault(pid, process)

    def alive(self, exclude: set[int] = frozenset()) -> list[psutil.Process]:
        found = []
        for pid, process in self.seen.items():
            if pid in exclude:
                continue
            with contextlib.suppress(psutil.Error):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
        return found

    def kill_all(self, case: subprocess.Popen[str]) -> dict[str, Any]:
        self.snapshot()
        self.running = False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(case.pid, signal.SIGKILL)
        leftovers = self.alive(exclude={case.pid})
        for process in leftovers:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(leftovers, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            case.wait(timeout=5)
        remaining = self.alive()
        return {
            "descendants_seen": len(self.seen) - 1,
            "killed_by_harness": [describe_process(p) for p in leftovers],
            "still_alive_after_kill": [describe_process(p) for p in remaining],
        }


def describe_process(process: psutil.Process) -> str:
    try:
        cmdline = " ".join(process.cmdline())[:120]
    except psutil.Error:
        cmdline = "?"
    return f"{process.pid}: {cmdline}"


def helper_names(processes: list[psutil.Process]) -> str:
    names = []
    for process in processes:
        text = describe_process(process)
        kind = next(
            (k for k in ("forkserver", "resource_tracker", "semaphore_tracker") if k in text),
            "process",
        )
        names.append(kind)
    return ", ".join(f"{n} {kind}" for kind, n in Counter(names).items())


def drive_plain(case: subprocess.Popen[str], events: Events, tracker: Tracker) -> dict[str, Any]:
    report = events.expect("result", CASE_TIMEOUT)
    if report is None:
        if case.poll() is None:
            return {"outcome": f"hangs (killed after {CASE_TIMEOUT:g} s)"}
        return {"outcome": f"case process died (exit code {case.returncode})"}
    with contextlib.suppress(subprocess.TimeoutExpired):
        case.wait(timeout=5)
    return report


def drive_parent_kill(
    case: subprocess.Popen[str], events: Events, tracker: Tracker
) -> dict[str, Any]:
    ready = events.expect("ready", CASE_TIMEOUT)
    if ready is None:
        return {"outcome": "tasks never started"}
    workers = set(ready["workers"])
    if not workers:  # no task logged its pid in time: "no orphans" would be vacuous
        return {"outcome": "tasks never started"}
    tracker.snapshot()
    helpers_before = tracker.alive(exclude=workers | {case.pid})
    os.kill(case.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    case.wait()
    gone_after = None
    while time.monotonic() < killed_at + ORPHAN_DELAY:
        if gone_after is None and not any(map(is_alive, workers)):
            gone_after = time.monotonic() - killed_at
        time.sleep(0.02)
    orphans = [pid for pid in workers if is_alive(pid)]
    helpers = [p for p in tracker.alive(exclude=workers | {case.pid}) if p in helpers_before]
    if orphans:
        outcome = (
            f"orphans: {len(orphans)} workers still alive {ORPHAN_DELAY:g} s after parent SIGKILL"
        )
    else:
        outcome = f"no orphans: workers exit {gone_after:.2f} s after parent SIGKILL"
    if helpers:
        outcome += f" (also alive: {helper_names(helpers)})"
    return {
        "outcome": outcome,
        "workers": sorted(workers),
        "orphans": orphans,
        "workers_gone_after_s": gone_after,
        "helpers_alive": [describe_process(p) for p in helpers],
    }


def drive_ctrl_c(case: subprocess.Popen[str], events: Events, tracker: Tracker) -> dict[str, Any]:
    if events.expect("ready", CASE_TIMEOUT) is None:
        return {"outcome": "pool never started"}
    workers = wait_for_workers(tracker.directory, WORKERS)
    if len(workers) < WORKERS:
        return {"outcome": "tasks never started"}
    time.sleep(0.3)
    sent = time.monotonic()
    os.killpg(case.pid, signal.SIGINT)
    alive_later, exited_after = watch_after_sigint(case, sent, workers)
    seen = events.drain()
    return summarize_ctrl_c(seen, sent, workers, alive_later, exited_after)


def watch_after_sigint(
    case: subprocess.Popen[str], sent: float, workers: list[int]
) -> tuple[list[int], float | None]:
    alive_later: list[int] | None = None
    exited_after = None
    while time.monotonic() < sent + SIGINT_WINDOW:
        if exited_after is None and case.poll() is not None:
            exited_after = time.monotonic() - sent
        if alive_later is None and time.monotonic() >= sent + SIGINT_CHECK:
            alive_later = [pid for pid in workers if is_alive(pid)]
        if exited_after is not None and alive_later is not None:
            break
        time.sleep(0.02)
    return alive_later or [], exited_after


def summarize_ctrl_c(
    seen: dict[str, Any],
    sent: float,
    workers: list[int],
    alive_later: list[int],
    exited_after: float | None,
) -> dict[str, Any]:
    interrupted = seen.get("map_interrupted")
    caught = seen.get("caught")
    if caught is not None:
        text = f"KeyboardInterrupt reaches except after {caught - sent:.2f} s"
        if interrupted is not None and caught - interrupted > 0.1:
            text += f" (leaves map after {interrupted - sent:.2f} s, then `with` exit waits)"
    elif interrupted is not None:
        text = (
            f"KeyboardInterrupt leaves map after {interrupted - sent:.2f} s, "
            f"but leaving `with` hangs (killed after {SIGINT_WINDOW:g} s)"
        )
    elif "map_returned" in seen:
        text = "no KeyboardInterrupt: map returned normally"
    else:
        text = f"KeyboardInterrupt never reaches the caller (killed after {SIGINT_WINDOW:g} s)"
    if caught is not None and exited_after is None:
        text += f"; process exit hangs (killed after {SIGINT_WINDOW:g} s)"
    text += f"; {{tracebacks}} Traceback lines on stderr; {len(alive_later)}/{len(workers)}"
    text += f" workers alive {SIGINT_CHECK:g} s later"
    return {
        "outcome": text,
        "map_interrupted_after_s": None if interrupted is None else round(interrupted - sent, 3),
        "caught_after_s": None if caught is None else round(caught - sent, 3),
        "process_exited_after_s": None if exited_after is None else round(exited_after, 3),
        "workers_alive_later": len(alive_later),
    }


DRIVERS = {"parent_kill": drive_parent_kill, "ctrl_c": drive_ctrl_c}


def run_case(engine_key: str, scenario: str) -> dict[str, Any]:
    directory = tempfile.mkdtemp(prefix="peer_faults_")
    stderr_path = Path(directory, "stderr")
    command = [sys.executable, "-m", "benchmarks.peer_faults", "--case", engine_key, scenario]
    started = time.monotonic()
    with stderr_path.open("w") as stderr:
        case = subprocess.Popen(
            [*command, directory],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group: the harness signals it whole
        )
    tracker = Tracker(case.pid, directory)
    events = Events(case.stdout)
    try:
        report = DRIVERS.get(scenario, drive_plain)(case, events, tracker)
    finally:
        cleanup = tracker.kill_all(case)
    stderr_text = stderr_path.read_text(errors="replace")
    shutil.rmtree(directory, ignore_errors=True)
    tracebacks = sum("Traceback" in line for line in stderr_text.splitlines())
    report["outcome"] = report["outcome"].replace("{tracebacks}", str(tracebacks))
    report.update(
        seconds=round(time.monotonic() - started, 2),
        traceback_lines=tracebacks,
        stderr_head=stderr_text[:1500],
        harness=cleanup,
    )
    return report


# --- output ---------------------------------------------------------------------------------


def markdown_table(results: dict[str, dict[str, dict[str, Any]]], engines: list[str]) -> str:
    header = "| fault | " + " | ".join(ENGINES[key].label for key in engines) + " |"
    lines = [header, "|---" * (len(engines) + 1) + "|"]
    for scenario, row in results.items():
        cells = [row[key]["outcome"].replace("|", "\\|") for key in engines]
        lines.append(f"| {SCENARIOS[scenario]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("loky", "pebble", "mpire", "conveyor", "psutil"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def write_json(path: Path, results: dict[str, Any], engines: list[str], table: str) -> None:
    start_methods = {
        key: next((row[key].get("start_method") for row in results.values() if key in row), None)
        for key in engines
    }
    document = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "-m", "benchmarks.peer_faults", *sys.argv[1:]]
        ),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": versions(),
        "workers": WORKERS,
        "engines": {
            key: {"label": ENGINES[key].label, "start_method": start_methods[key]}
            for key in engines
        },
        "scenarios": {key: SCENARIOS[key] for key in results},
        "results": results,
        "table": table,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated keys")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated keys")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--case", nargs=3, metavar=("ENGINE", "SCENARIO", "DIR"), help="internal")
    args = parser.parse_args(argv)
    args.engines = args.engines.split(",")
    args.scenarios = args.scenarios.split(",")
    unknown = set(args.engines) - set(ENGINES) | set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown engine or scenario: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.case:
        run_in_case_process(*args.case)
        return 0
    results: dict[str, dict[str, Any]] = {}
    total, done = len(args.scenarios) * len(args.engines), 0
    for scenario in args.scenarios:
        results[scenario] = {}
        for key in args.engines:
            done += 1
            report = run_case(key, scenario)
            results[scenario][key] = report
            print(
                f"[{done}/{total}] {scenario} {key} ({report['seconds']:.1f} s): "
                f"{report['outcome']}",
                file=sys.stderr,
                flush=True,
            )
            if report["harness"]["still_alive_after_kill"]:
                print(
                    f"  WARNING: left alive: {report['harness']['still_alive_after_kill']}",
                    file=sys.stderr,
                    flush=True,
                )
    table = markdown_table(results, args.engines)
    print(table)
    write_json(args.output, results, args.engines, table)
    print(f"\nwrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
