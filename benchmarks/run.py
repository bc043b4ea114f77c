"""Run the benchmark suite: conveyor and its peers side by side, one subprocess per case.

    python -m benchmarks.run            # full run (see README.md for the time it takes)
    python -m benchmarks.run --quick    # smoke run, smaller sizes, one timed run each
    python -m benchmarks.run --only tiny,latency --engines conveyor_pool,loky

Prints a table (absolute figures and ratios to multiprocessing.Pool), and writes
benchmarks/results/latest.json and latest.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import tasks
from .adapters import BASELINE, ENGINES
from .case import DUMP_STACKS_SIGNAL, MACHINE, RESULT_PREFIX, SERIAL
from .catalog import NO_ENGINE, WORKLOADS, select_workloads
from .chart import write_chart
from .config import WORKERS, Sizes, sizes_for
from .report import derive_cpu_figures, full_table

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
CALIBRATION_PROBE_LOOPS = 300_000
STDERR_TAIL_LINES = 6
HUNG_STDERR_TAIL_LINES = 80  # enough for the stacks of a hung case's threads
STACK_DUMP_WAIT_S = 2.0
VERSIONED_PACKAGES = ["conveyor", "numpy", "psutil", "loky", "joblib", "mpire", "pebble"]

Case = tuple[str, str]  # (workload, engine)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one timed run")
    parser.add_argument(
        "--only", type=_comma_list, help=f"workloads, comma-separated: {','.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--engines",
        type=_comma_list,
        help=f"engines, comma-separated ({BASELINE} is always kept as the baseline): "
        + ",".join(ENGINES),
    )
    parser.add_argument("--timeout", type=float, help="seconds per case (default by mode)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="JSON and PNG folder")
    parser.add_argument("--no-chart", action="store_true")
    return parser.parse_args(argv)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def select_engines(names: list[str] | None) -> list[str]:
    if not names:
        return list(ENGINES)
    unknown = [name for name in names if name not in ENGINES]
    if unknown:
        raise SystemExit(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    # Ratios are to multiprocessing.Pool in the same run, so it always runs.
    return [name for name in ENGINES if name in names or name == BASELINE]


def plan_cases(workloads: list[str], engines: list[str]) -> list[Case]:
    cases: list[Case] = []
    for workload in workloads:
        if WORKLOADS[workload].engines == NO_ENGINE:
            cases.append((workload, MACHINE))
            continue
        if workload == "cpu":
            cases.append((workload, SERIAL))
        cases.extend((workload, engine) for engine in engines)
    return cases


def calibrate_cpu_loops(target_s: float) -> int:
    """Loops of tasks.burn_cpu that take ``target_s`` here (fastest of three probes)."""
    fastest_s = min(_time_burn(CALIBRATION_PROBE_LOOPS) for _ in range(3))
    return int(CALIBRATION_PROBE_LOOPS * target_s / fastest_s)


def _time_burn(loops: int) -> float:
    start = time.perf_counter()
    tasks.burn_cpu(loops)
    return time.perf_counter() - start


def run_case(case: Case, quick: bool, cpu_loops: int, timeout_s: float) -> dict[str, Any]:
    """Run one case in a subprocess of its own session; never raises for the case's sake."""
    workload, engine = case
    # Other jobs share this machine: keep the load each case started under next to it.
    load_1min = os.getloadavg()[0]
    command = [sys.executable, "-m", "benchmarks.case", workload, engine]
    command += ["--cpu-loops", str(cpu_loops)] + (["--quick"] if quick else [])
    # Files, not pipes: a worker left behind by the case would hold a pipe open and make
    # reading it block past the case's end.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=out, stderr=err, start_new_session=True, env=_case_env()
        )
        try:
            process.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            _dump_stacks(process)
        finally:
            # The case leads its own process group: this also reaps any worker it left.
            _kill_group(process.pid)
            process.wait()
        elapsed_s = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if timed_out:
            outcome = {"status": "timeout", "detail": f"no result after {timeout_s:.0f} s"}
        else:
            outcome = _parse_outcome(out.read(), process.returncode)
        if outcome["status"] not in ("ok", "n/a", "unavailable"):
            keep = HUNG_STDERR_TAIL_LINES if timed_out else STDERR_TAIL_LINES
            outcome["stderr_tail"] = err.read().splitlines()[-keep:]
    outcome["elapsed_s"] = round(elapsed_s, 2)
    outcome["load_average_1min"] = round(load_1min, 2)
    return outcome


def _case_env() -> dict[str, str]:
    # Spawned and forkserver workers import benchmarks.tasks: they need the repo root.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _dump_stacks(process: subprocess.Popen) -> None:
    """Ask a hung case for its threads' stacks (see case.py) before it is killed."""
    try:
        process.send_signal(DUMP_STACKS_SIGNAL)
        process.wait(timeout=STACK_DUMP_WAIT_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass  # gone already, or still hung after dumping: killed next either way


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _parse_outcome(stdout: str, returncode: int) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    if returncode < 0:
        how = f"killed by {signal.Signals(-returncode).name}"
    else:
        how = f"exit code {returncode}"
    return {"status": "crashed", "detail": f"no result; {how}"}


def run_all(cases: list[Case], quick: bool, cpu_loops: int, timeout_s: float) -> dict:
    results: dict[str, dict[str, Any]] = {}
    for number, case in enumerate(cases, start=1):
        outcome = run_case(case, quick, cpu_loops, timeout_s)
        results.setdefault(case[0], {})[case[1]] = outcome
        note = outcome.get("detail", "")
        print(
            f"[{number:>3}/{len(cases)}] {case[0]:<10} {case[1]:<20} "
            f"{outcome['status']:<11} {outcome['elapsed_s']:>6.1f} s  "
            f"load {outcome['load_average_1min']:.1f}  {note}"[:160],
            file=sys.stderr,
            flush=True,
        )
    return results


def describe_run(sizes: Sizes, quick: bool, cpu_loops: int) -> dict[str, Any]:
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "workers": WORKERS,
        "load_average_at_start": os.getloadavg(),
        "cpu_loops_per_task": cpu_loops,
        "sizes": dataclasses.asdict(sizes),
        "versions": {name: _version(name) for name in VERSIONED_PACKAGES},
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write via a temporary file so a reader never sees half a JSON document."""
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_for(args.quick)
    try:
        workloads = select_workloads(args.only)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    engines = select_engines(args.engines)
    cpu_loops = calibrate_cpu_loops(sizes.cpu_task_s) if "cpu" in workloads else 0
    meta = describe_run(sizes, args.quick, cpu_loops)
    started = time.perf_counter()

    results = run_all(
        plan_cases(workloads, engines), args.quick, cpu_loops, args.timeout or sizes.case_timeout_s
    )
    derive_cpu_figures(results, WORKERS)
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    meta["load_average_at_end"] = os.getloadavg()

    table = full_table(workloads, engines, sizes, results)
    print(table)
    print(
        f"\n{meta['mode']} run: {meta['elapsed_s']:.0f} s; load average at start "
        f"{meta['load_average_at_start'][0]:.2f}, at end {meta['load_average_at_end'][0]:.2f}"
    )

    args.output.mkdir(parents=True, exist_ok=True)
    write_json(
        args.output / "latest.json",
        {"meta": meta, "engines": engines, "results": results, "table": table},
    )
    if not args.no_chart:
        title = (
            f"conveyor vs peers: {meta['mode']} run {meta['started'][:16]}, "
            f"{WORKERS} workers on {meta['cpu_count']} cores, Python {meta['python']}"
        )
        write_chart(args.output / "latest.png", engines, results, title)
    print(f"wrote {args.output / 'latest.json'}" + ("" if args.no_chart else " and latest.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
