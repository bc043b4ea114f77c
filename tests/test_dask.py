"""The Dask backend on a real cluster: faults, timeouts, scatter, set-up and clean-up.

The behaviour suites (``test_pool_api.py``, ``test_workers_api.py``...) already run over
Dask through conftest's ``backend`` fixture; this file holds what only Dask has: a worker
SIGKILLed in the middle of a map, a scheduler that disappears, per-worker initializers,
arguments sent once, the environment variable that moves a program to a cluster.
Clusters run in processes of their own (``dask_cluster.py``), as a real one would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

import conveyor
import tasks
from conftest import HAVE_DASK, TESTS_DIR, process_gone, start_dask_cluster, wait_until

pytestmark = pytest.mark.skipif(not HAVE_DASK, reason="distributed is not installed")

WAIT_S = 60.0  # a worker restarted by its nanny may take a while on a busy machine


@pytest.fixture
def pool(dask_client):
    with conveyor.WorkerPool(2, backend="dask", client=dask_client) as pool:
        yield pool


def test_default_size_is_the_clusters_thread_count(dask_client):
    threads = sum(dask_client.nthreads().values())
    with conveyor.WorkerPool(backend="dask", client=dask_client) as pool:
        assert pool.workers == threads >= 1


def test_map_on_dask_runs_on_the_cluster_workers(pool, dask_client):
    addresses = pool.map(tasks.dask_worker_address, range(50))
    assert set(addresses) <= set(_worker_addresses(dask_client))
    assert pool.map(tasks.square, range(1000)) == [x * x for x in range(1000)]


def test_tiny_tasks_travel_in_large_chunks_on_dask(pool):
    assert pool.map(tasks.square, range(200_000)) == [x * x for x in range(200_000)]
    stats = pool.statistics()
    # Dask costs milliseconds a task: 200,000 tasks must not be anywhere near as many chunks.
    assert stats.chunks_sent < 2_000
    assert stats.tasks_done == 200_000


def test_worker_sigkilled_mid_map_costs_only_its_chunks(dask_client, dask_cluster):
    pids = dask_cluster.worker_pids()
    items = range(20_000)
    with conveyor.WorkerPool(2, backend="dask", client=dask_client, retries=2) as pool:
        results = pool.imap(tasks.tiny_sleep_square, items)
        first = [next(results) for _ in range(500)]
        os.kill(pids[0], signal.SIGKILL)
        rest = list(results)
        stats = pool.statistics()
    assert first + rest == [x * x for x in items]
    assert stats.worker_crashes >= 1
    assert stats.tasks_done == 20_000
    _wait_for_workers(dask_client, 2)


def test_task_that_kills_every_worker_fails_naming_the_workers(dask_client):
    with conveyor.WorkerPool(2, backend="dask", client=dask_client, retries=1) as pool:
        future = pool.submit(tasks.kill_own_process)
        with pytest.raises(conveyor.WorkerCrashedError) as info:
            future.result(timeout=WAIT_S)
        assert pool.submit(tasks.square, 7).result(timeout=WAIT_S) == 49  # the pool goes on
    message = str(info.value)
    assert "tcp://127.0.0.1:" in message  # the Dask workers it ran on
    assert info.value.attempts == 2
    _wait_for_workers(dask_client, 2)


def test_scheduler_gone_fails_every_waiting_caller_within_seconds(tmp_path):
    cluster = start_dask_cluster(1)
    try:
        pool = conveyor.WorkerPool(1, backend="dask", client=cluster.address)
        gate = str(tmp_path / "never-opened")
        futures = [pool.submit(tasks.wait_for_path, gate, limit_s=60) for _ in range(3)]
        mapped: list[BaseException] = []
        mapper = threading.Thread(
            target=lambda: _capture(mapped, pool.map, tasks.wait_for_path, [gate] * 4)
        )
        mapper.start()
        time.sleep(1.0)  # the tasks are out on the worker
        psutil.Process(cluster.process.pid).kill()
        started = time.monotonic()
        for future in futures:
            with pytest.raises(conveyor.ClusterLostError, match="Dask scheduler"):
                future.result(timeout=WAIT_S)
        mapper.join(WAIT_S)
        assert not mapper.is_alive()
        assert isinstance(mapped[0], conveyor.ClusterLostError)
        assert time.monotonic() - started < 20
        with pytest.raises(conveyor.ConveyorError):
            pool.submit(tasks.square, 2).result(timeout=WAIT_S)
        pool.terminate()
    finally:
        cluster.stop()


def test_task_timeout_restarts_the_worker_and_the_pool_goes_on(dask_client, tmp_path):
    started, gate = tmp_path / "started", str(tmp_path / "gate")
    with conveyor.WorkerPool(2, backend="dask", client=dask_client, timeout=1.0) as pool:
        stuck = pool.submit(tasks.announce_then_wait, str(started), gate)
        with pytest.raises(conveyor.TaskTimeoutError):
            stuck.result(timeout=WAIT_S)
        wait_until(
            lambda: process_gone(int(started.read_text())), "the overdue task's worker to die"
        )
        assert pool.map(tasks.square, range(20)) == [x * x for x in range(20)]
        assert pool.statistics().task_timeouts == 1
    _wait_for_workers(dask_client, 2)


def test_cancel_of_a_running_task_restarts_its_worker(dask_client, tmp_path):
    started, gate = tmp_path / "started", str(tmp_path / "gate")
    with conveyor.WorkerPool(2, backend="dask", client=dask_client) as pool:
        future = pool.submit(tasks.announce_then_wait, str(started), gate)
        wait_until(started.exists, "the task to start")
        assert pool.cancel(future) is True
        with pytest.raises(conveyor.TaskCancelledError):
            future.result(timeout=WAIT_S)
        wait_until(
            lambda: process_gone(int(started.read_text())), "the cancelled task's worker to die"
        )
        assert pool.submit(tasks.square, 3).result(timeout=WAIT_S) == 9
    _wait_for_workers(dask_client, 2)


def test_initializer_runs_once_per_dask_worker_process(dask_client, tmp_path):
    with conveyor.WorkerPool(
        2,
        backend="dask",
        client=dask_client,
        initializer=tasks.record_initializer,
        initargs=(str(tmp_path), "init"),
    ) as pool:
        pids = {pid for _, pid in pool.map(tasks.square_with_pid, range(400))}
    records = {name.split("-")[0]: (tmp_path / name).read_text() for name in os.listdir(tmp_path)}
    assert set(records) == {str(pid) for pid in pids}  # where tasks ran, and only there
    assert all(text == "init\n" for text in records.values())  # once per worker process


def test_failing_initializer_breaks_the_pool_with_worker_init_error(dask_client):
    with (
        conveyor.WorkerPool(
            2, backend="dask", client=dask_client, initializer=tasks.failing_initializer
        ) as pool,
        pytest.raises(conveyor.WorkerInitError, match="initializer raised"),
    ):
        pool.map(tasks.square, range(10))


def test_worker_state_is_one_per_dask_worker(dask_client):
    with conveyor.WorkerPool(
        2, backend="dask", client=dask_client, worker_state=tasks.counting_state
    ) as pool:
        seen = pool.map(tasks.read_state, range(300))
    by_pid: dict[int, set[int]] = {}
    for state in seen:
        by_pid.setdefault(state["pid"], set()).add(state["built"])
    assert all(len(built) == 1 for built in by_pid.values())


def test_a_large_array_argument_travels_to_the_cluster_once(pool):
    big = np.ones(1_000_000)  # 8 MB
    futures = [pool.submit(tasks.sum_of_array_plus, big, k) for k in range(20)]
    assert [f.result(timeout=WAIT_S) for f in futures] == [1_000_000.0 + k for k in range(20)]
    # Inline, 20 tasks would have carried 160 MB; scattered once, each carries a reference.
    assert pool.statistics().bytes_sent < 1_000_000


def test_a_function_closing_over_a_large_array_is_scattered_once(pool):
    big = np.arange(1_000_000, dtype=np.float64)
    results = pool.map(lambda i: float(big[i]), range(0, 1_000_000, 100_000))
    assert results == [float(i) for i in range(0, 1_000_000, 100_000)]


def test_task_error_keeps_its_type_and_remote_traceback(pool):
    with pytest.raises(ValueError, match="boom") as info:
        pool.submit(tasks.raise_value_error, "boom").result(timeout=WAIT_S)
    assert "raise_value_error" in str(info.value.__cause__)


def test_lazy_input_stays_bounded_on_dask(pool):
    read = 0

    def endless():
        nonlocal read
        while read < 10_000_000:
            read += 1
            yield read

    results = pool.imap(tasks.square, endless())
    taken = [next(results) for _ in range(1_000)]
    results.cancel()
    assert taken == [x * x for x in range(1, 1_001)]
    assert read < 200_000


def test_task_events_carry_the_dask_workers_address(pool, dask_client):
    seen: list[conveyor.TaskEvent] = []
    with pool.subscribe(seen.append):
        pool.map(tasks.square, range(10))
    done = [e for e in seen if e.kind is conveyor.EventKind.FINISHED]
    assert done and {e.host for e in done} <= set(_worker_addresses(dask_client))


def test_options_dask_cannot_honour_are_errors_when_the_pool_is_made(dask_client):
    with pytest.raises(ValueError, match="max_tasks_per_worker"):
        conveyor.WorkerPool(2, backend="dask", client=dask_client, max_tasks_per_worker=5)
    with pytest.raises(ValueError, match="memory_limit"):
        conveyor.WorkerPool(2, backend="dask", client=dask_client, max_worker_memory=1 << 30)


def test_a_pool_without_a_client_owns_a_local_cluster_and_closes_it():
    with conveyor.WorkerPool(2, backend="dask") as pool:
        assert pool.map(tasks.square, range(100)) == [x * x for x in range(100)]
        assert len(psutil.Process().children(recursive=True)) >= 2  # its worker processes
    # conftest's leak check then proves that the cluster's processes are gone


def test_conveyor_map_on_dask_reuses_one_shared_pool(dask_cluster):
    first = conveyor.map(tasks.square, range(100), backend="dask", client=dask_cluster.address)
    pool = conveyor.shared_pool(None, "dask", dask_cluster.address)
    second = conveyor.submit(tasks.add, 2, 3, backend="dask", client=dask_cluster.address)
    assert first == [x * x for x in range(100)]
    assert second.result(timeout=WAIT_S) == 5
    assert conveyor.shared_pool(None, "dask", dask_cluster.address) is pool


def test_environment_moves_unchanged_pool_code_to_dask(dask_cluster, dask_client, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import conveyor, tasks
            from concurrent.futures import as_completed

            if __name__ == "__main__":
                with conveyor.Pool(2) as pool:
                    print(sorted(set(pool.map(tasks.dask_worker_address, range(20)))))
                with conveyor.ProcessPoolExecutor(2) as ex:
                    print(ex.submit(tasks.square, 9).result())
            """
        )
    )
    env = dict(
        os.environ,
        CONVEYOR_BACKEND="dask",
        CONVEYOR_DASK_SCHEDULER=dask_cluster.address,
        PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]),
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert set(eval(lines[0])) <= set(_worker_addresses(dask_client))
    assert lines[1] == "81"


def test_missing_distributed_is_an_import_error_naming_the_extra():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["distributed"] = None  # as if it were not installed
        import conveyor
        try:
            conveyor.WorkerPool(2, backend="dask")
        except ImportError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "pip install 'conveyor[dask]'" in done.stdout, done.stderr


def test_import_conveyor_does_not_import_distributed():
    code = "import sys, conveyor; print('distributed' in sys.modules, 'dask' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"], done.stderr


# --- helpers -----------------------------------------------------------------------------


def _capture(box: list, fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as exc:
        box.append(exc)


def _worker_addresses(client) -> list[str]:
    return list(client.scheduler_info()["workers"])


def _wait_for_workers(client, n: int) -> None:
    """Leave the session cluster as we found it: n workers (a killed one is restarted)."""
    wait_until(lambda: len(_worker_addresses(client)) >= n, f"{n} Dask workers")


def test_timeouts_are_refused_on_workers_without_a_nanny():
    from distributed import Client, LocalCluster

    # Workers in this process have no nanny: nothing could stop a running task.
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        with pytest.raises(ValueError, match="nanny"):
            conveyor.WorkerPool(1, backend="dask", client=client, timeout=5)
        with conveyor.WorkerPool(1, backend="dask", client=client) as pool:
            with pytest.raises(ValueError, match="nanny"):
                pool.map(tasks.square, range(3), timeout=5)
            assert pool.map(tasks.square, range(3)) == [0, 1, 4]
