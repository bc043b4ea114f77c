"""One engine on one workload, in a process of its own.

The runner (run.py) starts ``python -m benchmarks.case WORKLOAD ENGINE ...`` with a timeout;
this module prints one line ``RESULT {json}`` on stdout. A hang or a crash therefore costs
one case, never the suite, and no engine inherits another's threads, workers or memory.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import traceback
from typing import Any

# Only light imports at module level: workers started by spawn, forkserver or loky re-run
# this module (the parent's __main__) before their first task, so numpy or an engine
# imported here would be billed to every fresh-interpreter engine's start-up time.
from . import tasks
from .config import sizes_for

RESULT_PREFIX = "RESULT "
SERIAL = "serial"  # the pseudo-engine of the CPU-bound baseline
MACHINE = "machine"  # the pseudo-engine of the physical references
DUMP_STACKS_SIGNAL = signal.SIGUSR1


def run_case(workload: str, engine_key: str, ctx: Any) -> dict[str, Any]:
    from .adapters import ENGINES, Unavailable, Unsupported
    from .physical import measure_physical
    from .workloads import RUNNERS, cpu_serial

    if workload == "physical":
        return {"status": "ok", "figures": measure_physical(ctx.sizes.physical_repeats)}
    if engine_key == SERIAL:
        return {"status": "ok", "figures": cpu_serial(ctx)}
    try:
        return {"status": "ok", "figures": RUNNERS[workload](ENGINES[engine_key], ctx)}
    except Unavailable as reason:
        return {"status": "unavailable", "detail": str(reason)}
    except Unsupported as reason:
        return {"status": "n/a", "detail": str(reason)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workload")
    parser.add_argument("engine")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cpu-loops", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The runner sends this signal before killing a case that timed out: the stacks of
    # every thread land in stderr, and so in the JSON, showing where the engine hung.
    faulthandler.register(DUMP_STACKS_SIGNAL, all_threads=True)
    # Lets a task tell a forked worker (which inherits this) from a fresh interpreter.
    tasks.PARENT_PID_IF_FORKED = os.getpid()
    from .workloads import CaseContext

    ctx = CaseContext(sizes=sizes_for(args.quick), cpu_loops=args.cpu_loops)
    try:
        outcome = run_case(args.workload, args.engine, ctx)
    except Exception as error:
        traceback.print_exc()
        outcome = {"status": "error", "detail": f"{type(error).__name__}: {error}"}
    print(RESULT_PREFIX + json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
