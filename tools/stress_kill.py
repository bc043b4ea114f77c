"""Kill storm: map N tasks while random workers are SIGKILLed every few hundred ms.

With retries on, every task's result must arrive exactly once and equal the serial
result. With retries off, every task ends in a result or WorkerCrashedError and the counts
add up. Used at full size from here, and at a smaller size by tests/test_stress.py.

    python tools/stress_kill.py                      # 20,000 tasks, retries on and off
    python tools/stress_kill.py --tasks 5000 --json out.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass

import conveyor

TASK_SPIN_S = 0.0005


def work(i: int) -> tuple[int, int]:
    """Half a millisecond of CPU, then a result that depends only on the input."""
    end = time.perf_counter() + TASK_SPIN_S
    while time.perf_counter() < end:
        pass
    return i, (i * 2654435761) % 1_000_003


@dataclass
class Report:
    tasks: int
    retries: int
    kills: int
    crashes_seen: int
    retried: int
    succeeded: int
    failed_crashed: int
    lost: int
    duplicated: int
    wrong: int
    seconds: float


def run(n_tasks: int, retries: int, kill_every_s: tuple[float, float], seed: int = 0) -> Report:
    expected = dict(work(i) for i in range(n_tasks)) if n_tasks <= 50_000 else None
    seen: collections.Counter[int] = collections.Counter()
    wrong = crashed = 0
    started = time.monotonic()
    with conveyor.WorkerPool(2, retries=retries) as pool:
        killer = _Killer(pool, kill_every_s, seed)
        killer.start()
        try:
            results = pool.imap(work, range(n_tasks), ordered=False)
            while True:
                try:
                    i, value = next(results)
                except StopIteration:
                    break
                except conveyor.WorkerCrashedError:
                    crashed += 1
                    continue
                seen[i] += 1
                if expected is not None and expected[i] != value:
                    wrong += 1
        finally:
            killer.stop()
        stats = pool.stats()
    return Report(
        tasks=n_tasks,
        retries=retries,
        kills=killer.kills,
        crashes_seen=stats.worker_crashes,
        retried=stats.tasks_retried,
        succeeded=len(seen),
        failed_crashed=crashed,
        lost=n_tasks - len(seen) - crashed,
        duplicated=sum(count - 1 for count in seen.values()),
        wrong=wrong,
        seconds=round(time.monotonic() - started, 2),
    )


class _Killer:
    """SIGKILLs a random live worker at random intervals, on its own thread."""

    def __init__(self, pool: conveyor.WorkerPool, every_s: tuple[float, float], seed: int):
        self._pool = pool
        self._every_s = every_s
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stress-killer", daemon=True)
        self.kills = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # The random interval is the fault schedule under test, not synchronisation.
        while not self._stop.wait(self._rng.uniform(*self._every_s)):
            pids = [w.pid for w in self._pool.stats().workers if w.alive and w.pid]
            if not pids:
                continue
            try:
                os.kill(self._rng.choice(pids), signal.SIGKILL)
                self.kills += 1
            except ProcessLookupError:
                pass  # it died or was replaced meanwhile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--min-interval", type=float, default=0.1)
    parser.add_argument("--max-interval", type=float, default=0.4)
    parser.add_argument("--retries", type=int, default=10, help="for the retries-on run")
    parser.add_argument("--json", help="write both reports here")
    args = parser.parse_args()
    every = (args.min_interval, args.max_interval)
    reports = [run(args.tasks, args.retries, every), run(args.tasks, 0, every, seed=1)]
    for report in reports:
        print(json.dumps(asdict(report)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in reports], f, indent=2)
    ok = all(r.lost == 0 and r.duplicated == 0 and r.wrong == 0 for r in reports)
    ok = ok and reports[0].failed_crashed == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
