"""The command line side by side: ``conveyor run`` against GNU parallel and ``xargs -P``.

Workloads (each tool in turns, ``--repeat`` rounds, the median reported):

- **true**: ``--jobs`` jobs of ``true`` from stdin, 2 slots, in jobs/s: the cost of a
  job itself (a fork and exec of ``sh -c true``, its output collected, its end noted);
- **resume**: a ``--jobs``-job log already complete, ``--resume``: seconds to read it
  and skip every job (conveyor only: GNU parallel resumes by position, another thing);
- **map**: ``conveyor map`` of a tiny function (``x * x``) over ``--lines`` JSON lines,
  records/s, against a Python loop doing the same serially (decode, call, encode, write).

Run from the repository root (GNU parallel from Debian's ``parallel`` package)::

    PYTHONPATH=src python -m benchmarks.cli              # about a minute
    PYTHONPATH=src python -m benchmarks.cli --jobs 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CONVEYOR = [sys.executable, "-m", "conveyor", "run"]


def _timed(argv: list[str], stdin: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr[-500:]}")
    return seconds


def true_jobs(tool: str, jobs: int) -> float:
    stdin = "".join(f"{i}\n" for i in range(jobs))
    argv = {
        "conveyor run": [*CONVEYOR, "-j", "2", "true"],
        "GNU parallel": ["parallel", "--will-cite", "-j", "2", "true"],
        "xargs -P 2": ["xargs", "-P", "2", "-n", "1", "true"],
    }[tool]
    return jobs / _timed(argv, stdin)


def resume_s(jobs: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        log = os.path.join(directory, "log")
        stdin = "".join(f"{i}\n" for i in range(jobs))
        _timed([*CONVEYOR, "-j", "8", "--joblog", log, "true"], stdin)
        return _timed([*CONVEYOR, "--resume", "--joblog", log, "true"], stdin)


_SERIAL = """
import json, sys
out = sys.stdout
for seq, line in enumerate(open(sys.argv[1]), 1):
    value = json.loads(line)
    out.write(json.dumps({"seq": seq, "input": value, "ok": True, "result": value * value}) + "\\n")
"""
_MODULE = "def square(x):\n    return x * x\n"


def map_records(lines: int) -> tuple[float, float]:
    """(conveyor map, the serial loop) in records/s."""
    with tempfile.TemporaryDirectory() as directory:
        data = os.path.join(directory, "in.jsonl")
        with open(data, "w") as file:
            file.writelines(f"{i}\n" for i in range(lines))
        with open(os.path.join(directory, "bench_square.py"), "w") as file:
            file.write(_MODULE)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([directory, *sys.path]))

        def timed(argv: list[str]) -> float:
            started = time.perf_counter()
            subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, cwd=directory, env=env)
            return lines / (time.perf_counter() - started)

        ours = timed([sys.executable, "-m", "conveyor", "map", "bench_square:square", data])
        serial = timed([sys.executable, "-c", _SERIAL, data])
        return ours, serial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    tools = ["conveyor run", "GNU parallel", "xargs -P 2"]
    tools = [t for t in tools if t != "GNU parallel" or shutil.which("parallel")]
    print(f"== {args.jobs:,} jobs of `true`, 2 slots (jobs/s)")
    figures: dict[str, list[float]] = {t: [] for t in tools}
    for _ in range(args.repeat):
        for tool in tools:
            figures[tool].append(true_jobs(tool, args.jobs))
    ours = statistics.median(figures["conveyor run"])
    for tool, samples in figures.items():
        figure = statistics.median(samples)
        print(f"   {tool:16} {figure:10,.0f}   conveyor is {ours / figure:5.2f}x")
    print(f"== resume of a {args.jobs:,}-job log, every job done (s)")
    resume = statistics.median(resume_s(args.jobs) for _ in range(args.repeat))
    print(f"   conveyor run     {resume:10.2f}")
    print(f"== conveyor map of x * x over {args.lines:,} JSON lines (records/s)")
    rounds = [map_records(args.lines) for _ in range(args.repeat)]
    ours = statistics.median(r[0] for r in rounds)
    serial = statistics.median(r[1] for r in rounds)
    print(f"   conveyor map     {ours:10,.0f}")
    print(f"   a serial loop    {serial:10,.0f}   conveyor is {ours / serial:5.2f}x")


if __name__ == "__main__":
    main()
