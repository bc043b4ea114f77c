"""How the supervisor's cost grows with callers and with workers (conveyor only).

The supervisor thread (``conveyor-supervisor``) reads every result, settles it and sends
the next chunk; its own CPU clock says what that costs, whatever else runs on the
machine. Two sweeps:

- callers: 1, 4, 16, 64 threads doing ``apply_async().get()`` on 2 workers: the
  supervisor's CPU per round trip, and the whole parent's;
- workers: a map of 1,000,000 ``x*x`` on 2, 8, 32, 64, 128 workers: chunks per map, the
  supervisor's CPU per chunk and per map, and the throughput.

Run from the repository root::

    python -m benchmarks.supervisor_cost            # about a minute
    python -m benchmarks.supervisor_cost --quick

Nothing here is compared with a peer, and nothing is asserted: this is the data behind
the growth figures in docs/performance.md.
"""

from __future__ import annotations

import argparse
import threading
import time

import conveyor

from . import tasks


def _supervisor_clock(pool: conveyor.Pool) -> int:
    for thread in threading.enumerate():
        if thread.name == "conveyor-supervisor" and thread.ident is not None:
            return time.pthread_getcpuclockid(thread.ident)
    raise RuntimeError("no supervisor thread")


def _cpu(clock: int) -> float:
    return time.clock_gettime(clock)


def callers_sweep(counts: list[int], seconds: float) -> None:
    print("callers (2 workers): round trips/s, supervisor CPU and parent CPU per round trip")
    with conveyor.Pool(2) as pool:
        pool.map(tasks.square, range(1000))
        clock = _supervisor_clock(pool)
        for callers in counts:
            done = [0] * callers
            stop = time.monotonic() + seconds

            def call(k: int, stop: float = stop, done: list[int] = done) -> None:
                while time.monotonic() < stop:
                    pool.apply_async(tasks.square, (3,)).get()
                    done[k] += 1

            threads = [threading.Thread(target=call, args=(k,)) for k in range(callers)]
            sup0, proc0, wall0 = _cpu(clock), time.process_time(), time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - wall0
            n = sum(done)
            sup_us = (_cpu(clock) - sup0) / n * 1e6
            parent_us = (time.process_time() - proc0) / n * 1e6
            print(
                f"  {callers:3} callers: {n / wall:9,.0f}/s  supervisor {sup_us:5.1f} us"
                f"  parent {parent_us:5.1f} us per round trip"
            )


def workers_sweep(counts: list[int], items: int) -> None:
    print(f"workers (map of {items:,} x*x): chunks, supervisor CPU per chunk and per map")
    data = list(range(items))
    for workers in counts:
        with conveyor.Pool(workers) as pool:
            pool.map(tasks.square, range(10_000))
            clock = _supervisor_clock(pool)
            before = pool.statistics().chunks_sent
            sup0, wall0 = _cpu(clock), time.perf_counter()
            pool.map(tasks.square, data)
            wall = time.perf_counter() - wall0
            sup = _cpu(clock) - sup0
            chunks = pool.statistics().chunks_sent - before
            print(
                f"  {workers:3} workers: {items / wall / 1e6:5.2f} M/s  {chunks:5} chunks"
                f"  supervisor {sup * 1e6 / chunks:6.0f} us per chunk, {sup * 1e3:6.1f} ms per map"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        callers_sweep([1, 16], 1.0)
        workers_sweep([2, 32], 200_000)
    else:
        callers_sweep([1, 4, 16, 64], 3.0)
        workers_sweep([2, 8, 32, 64, 128], 1_000_000)


if __name__ == "__main__":
    main()
