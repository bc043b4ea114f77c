"""Shared fixtures: every test runs under a timeout and must leave nothing behind.

After each test, no child process (nor zombie) of the test process may remain, other than
multiprocessing's own long-lived helpers (the fork server, the resource tracker) and the
session's Dask cluster (``dask_cluster.py``, started by the first test that needs it), and
no ``conveyor-*`` thread may still run. Pools are given a few seconds to wind down first.

The behaviour suites run over every backend: ``process``, ``thread`` and ``dask`` (on the
session cluster: real worker processes under nannies), minus what a backend cannot do,
skipped with the reason.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import psutil
import pytest

import conveyor
from conveyor._shared._limiters import shutdown_default_manager
from conveyor.workers import shutdown_shared_pools

sys.path.insert(0, os.path.dirname(__file__))

LEAK_GRACE_S = 10.0
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
CLUSTER_START_S = 60.0

try:
    import distributed  # noqa: F401

    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False

# Every start method the platform offers for process pools; "thread" for thread pools.
PROCESS_METHODS = [
    m for m in ("forkserver", "spawn", "fork") if m in multiprocessing.get_all_start_methods()
]


def _helper_pids() -> set[int]:
    """multiprocessing's own helper processes, shared by every pool in the process."""
    pids = set()
    from multiprocessing import forkserver, resource_tracker

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if pid:
        pids.add(pid)
    pid = getattr(resource_tracker._resource_tracker, "_pid", None)
    if pid:
        pids.add(pid)
    return pids


def _cluster_pids() -> set[int]:
    """The Dask clusters' processes (each cluster process and everything under it)."""
    pids: set[int] = set()
    for cluster in list(_CLUSTERS):
        pids.add(cluster.process.pid)
        try:
            pids.update(p.pid for p in psutil.Process(cluster.process.pid).children(True))
        except psutil.Error:
            pass
    return pids


def leftover_processes() -> list[psutil.Process]:
    helpers = _helper_pids() | _cluster_pids()
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in children if p.pid not in helpers]


def leftover_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.is_alive()
        and t not in before
        and t.name.startswith(("conveyor-", "ThreadPoolExecutor-"))
    ]


@pytest.fixture(autouse=True)
def no_leaks():
    before = set(threading.enumerate())
    yield
    shutdown_shared_pools()
    shutdown_default_manager()
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        procs = leftover_processes()
        threads = leftover_threads(before)
        if not procs and not threads:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    described = [f"{p.pid} {_describe(p)}" for p in procs]
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    pytest.fail(
        f"test left processes {described} and threads {[t.name for t in threads]} behind",
        pytrace=False,
    )


WAIT_S = 30.0  # generous bound on any single wait; a passing test takes a fraction of it


def wait_until(predicate, what: str, timeout: float = WAIT_S) -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


_UNPICKLE_AS_A_STRANGER = """
import pickle, sys
import conveyor
try:
    pickle.loads(sys.stdin.buffer.read())
except conveyor.AccessRefusedError as exc:
    print("refused:", exc)
"""


def refused_to_a_stranger(pickled: bytes) -> str:
    """Unpickle ``pickled`` in a fresh interpreter, which has a random authkey of its
    own, and return what it printed: ``refused: ...`` when it was turned away."""
    stranger = subprocess.run(
        [sys.executable, "-c", _UNPICKLE_AS_A_STRANGER],
        input=pickled,
        capture_output=True,
        timeout=WAIT_S,
    )
    return stranger.stdout.decode()


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie counts: it runs nothing any more)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _describe(p: psutil.Process) -> str:
    try:
        return f"{p.status()} {' '.join(p.cmdline())[:80]}"
    except psutil.Error:
        return "(gone)"


# --- Dask clusters in processes of their own ----------------------------------------------


@dataclass
class DaskCluster:
    """A ``LocalCluster`` in a child process (``dask_cluster.py``): its address, and how to
    end it. Its processes are not leaks; stopping it waits for all of them."""

    process: subprocess.Popen
    address: str
    extra: list = field(default_factory=list)

    def worker_pids(self) -> list[int]:
        """The pids of its worker processes (children of the nannies' process)."""
        from distributed import Client

        with Client(self.address, set_as_default=False, timeout=30) as client:
            return sorted(client.run(os.getpid).values())

    def stop(self) -> None:
        try:
            tree = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for p in tree:  # killed with the cluster process, or outliving it: end them
            try:
                p.kill()
                p.wait(10)
            except psutil.Error:
                pass
        _CLUSTERS.discard(self)

    def __hash__(self) -> int:
        return id(self)


_CLUSTERS: set[DaskCluster] = set()


def start_dask_cluster(workers: int = 2) -> DaskCluster:
    """Start ``dask_cluster.py`` and wait for its address (bounded).

    Its log (Dask's own: workers leaving, nannies restarting them) goes to a file named
    by ``CONVEYOR_TEST_DASK_LOG`` if set, else nowhere.
    """
    log_path = os.environ.get("CONVEYOR_TEST_DASK_LOG", os.devnull)
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            [sys.executable, os.path.join(TESTS_DIR, "dask_cluster.py"), str(workers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    cluster = DaskCluster(process, "")
    _CLUSTERS.add(cluster)
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))
    reader.start()
    reader.join(CLUSTER_START_S)
    if not line or not line[0].startswith("tcp://"):
        cluster.stop()
        pytest.fail(f"the test Dask cluster did not start: {line!r}")
    cluster.address = line[0].strip()
    return cluster


@pytest.fixture(scope="session")
def dask_cluster():
    """One 2-worker cluster for the session (started by the first test that asks)."""
    if not HAVE_DASK:
        pytest.skip("distributed is not installed (pip install 'conveyor[dask]')")
    cluster = start_dask_cluster(2)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def dask_client(dask_cluster):
    """A client on the session cluster, shared as a program would share one."""
    from distributed import Client

    client = Client(dask_cluster.address, set_as_default=False, timeout=30)
    yield client
    client.close()


@pytest.fixture(params=["process", "thread", "dask"])
def backend(request) -> str:
    """The behaviour suite runs once per backend."""
    if request.param == "dask":
        request.getfixturevalue("dask_client")
    return request.param


@pytest.fixture
def backend_options(request, backend) -> dict:
    """What a pool needs beyond ``backend=``: the cluster, for Dask."""
    if backend == "dask":
        return {"client": request.getfixturevalue("dask_client")}
    return {}


def skip_on_dask(backend: str, reason: str) -> None:
    """Skip a behaviour test whose subject the dask backend lacks, saying which."""
    if backend == "dask":
        pytest.skip(f"dask backend: {reason}")


@pytest.fixture(params=PROCESS_METHODS)
def start_method(request) -> str:
    return request.param


@pytest.fixture
def make_pool(backend, backend_options):
    """Build drop-in pools for the current backend; terminates whatever the test left open."""
    pools = []

    def make(*args, **kwargs):
        cls = conveyor.ThreadPool if backend == "thread" else conveyor.Pool
        if backend == "thread":
            kwargs.pop("maxtasksperchild", None)
            kwargs.pop("context", None)
        if backend == "dask":
            if kwargs.get("maxtasksperchild") is not None or len(args) > 3:
                pytest.skip("dask backend: Dask's workers are not recycled (maxtasksperchild)")
            kwargs.pop("context", None)
            kwargs.update(backend="dask", **backend_options)
        pool = cls(*args, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()
