"""A Dask ``LocalCluster`` in a process of its own, for the tests.

Prints the scheduler's address, then runs until its stdin closes. Its worker processes
are real (spawned, each under a nanny that restarts it), and they can import the tests'
``tasks`` module, as a real cluster's workers import the code they run.

    python tests/dask_cluster.py [N_WORKERS]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    from distributed import LocalCluster

    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        host="127.0.0.1",
    ) as cluster:
        print(cluster.scheduler_address, flush=True)
        sys.stdin.read()  # until the test session closes our stdin


if __name__ == "__main__":
    main()
