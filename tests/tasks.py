"""Task functions for the tests: importable by worker processes under every start method."""

from __future__ import annotations

import os
import signal
import threading
import time

import conveyor


def square(x):
    return x * x


def add(a, b):
    return a + b


def identity(x):
    return x


def pid_of(_=None):
    return os.getpid()


def sleep_then(x, seconds=0.05):
    time.sleep(seconds)
    return x


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def fail_on(x, bad=3):
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def raise_value_error(message="boom"):
    raise ValueError(message)


def crash_on(x, bad=3):
    """Kill the worker process for real on one item (SIGKILL to itself)."""
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def exit_process(code=1):
    os._exit(code)


def call_sys_exit(code=3):
    raise SystemExit(code)


class UnpicklableError(Exception):
    """Pickles, but cannot be unpickled: __init__ needs two arguments."""

    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")


def raise_unpicklable_error():
    raise UnpicklableError(1, 2)


def return_lock(_=None):
    return threading.Lock()


def read_state(_=None):
    return conveyor.worker_state()


def read_global(_=None):
    return GLOBAL.get("value")


GLOBAL: dict = {}


def set_global(value):
    GLOBAL["value"] = value


def failing_initializer():
    raise RuntimeError("initializer failed on purpose")


def counting_state():
    GLOBAL["built"] = GLOBAL.get("built", 0) + 1
    return {"pid": os.getpid(), "built": GLOBAL["built"]}


# --- tasks for test_executor_api.py and test_workers_api.py --------------------------------


def wait_for_path(path, value=None, limit_s=20.0):
    """Block until ``path`` exists (a gate the test opens), then return ``value``."""
    deadline = time.monotonic() + limit_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was never opened")
        time.sleep(0.005)
    return value


def announce_then_wait(started_path, gate_path, value=None):
    """Create ``started_path`` holding our pid (the test sees the task running), then wait
    for the gate. Written aside and renamed: a test that sees the file sees the pid."""
    with open(started_path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(started_path + ".tmp", started_path)
    return wait_for_path(gate_path, value)


def touch_path(path, value=None):
    """A side effect the test can look for: proof that the task ran."""
    with open(path, "w"):
        pass
    return value


def thread_name(_=None):
    return threading.current_thread().name


def worker_identity(_=None):
    """Which worker runs this call: (pid, thread ident)."""
    return os.getpid(), threading.get_ident()


def record_initializer(directory, tag):
    """Initializer: append ``tag`` to a file named after this worker (one line per run)."""
    pid, ident = worker_identity()
    with open(os.path.join(directory, f"{pid}-{ident}"), "a") as f:
        f.write(tag + "\n")


def announce_wait_then_touch(started_path, gate_path, done_path, value=None):
    """Like ``announce_then_wait``, and leave ``done_path`` behind once it has finished."""
    announce_then_wait(started_path, gate_path)
    return touch_path(done_path, value)


def crash_item_first_time(x, marker_path, bad=3):
    """SIGKILL the worker on item ``bad``, but only the first time (the marker remembers)."""
    if x == bad and not os.path.exists(marker_path):
        with open(marker_path, "w"):
            pass
        os.kill(os.getpid(), signal.SIGKILL)
    return x


_STATE_BUILDS: dict = {}


def build_worker_state(token):
    """worker_state factory: counts how often it ran on this worker (per test token)."""
    key = (token, *worker_identity())
    _STATE_BUILDS[key] = _STATE_BUILDS.get(key, 0) + 1
    return {"built_on": worker_identity()}


def inspect_worker_state(token):
    """(this worker, id of its state, where the state was built, builds on this worker)."""
    state = conveyor.worker_state()
    me = worker_identity()
    return me, id(state), state["built_on"], _STATE_BUILDS.get((token, *me), 0)


# --- fault injection (real faults, no mocks) ------------------------------------------


def segfault(_=None):
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def abort(_=None):
    os.abort()


def fault(kind, x=None):
    """Die for real in the way named by ``kind``."""
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "sigsegv":
        segfault()
    elif kind == "abort":
        abort()
    elif kind == "os_exit":
        os._exit(1)
    return x


def crash_once(marker_path, value):
    """SIGKILL the worker on the first attempt only (the marker file remembers)."""
    if not os.path.exists(marker_path):
        with open(marker_path, "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def announce_then_sleep(path, seconds=30.0):
    """Write our pid to ``path`` (the test waits for it), then block."""
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)
    return seconds


class HugeResult:
    """A result that cannot be sent back: pickling it needs more memory than there is."""

    def __reduce__(self):
        raise MemoryError("result too large to pickle")


def make_huge_result(_=None):
    return HugeResult()


def make_huge_result_on(x, bad=1):
    return HugeResult() if x == bad else "small"


_HOARD: list = []


def leak_memory(megabytes):
    _HOARD.append(bytearray(megabytes * 1024 * 1024))
    return os.getpid()


def square_with_pid(x):
    return x * x, os.getpid()


def make_adder(n):
    """Returns a closure: only cloudpickle can send it back."""
    return lambda x: x + n


def _fail_to_unpickle():
    raise RuntimeError("this object refuses to be unpickled")


class FailsToUnpickle:
    """Pickles fine in the parent; unpickling it (in the worker) raises."""

    def __reduce__(self):
        return (_fail_to_unpickle, ())


def array_sum(a):
    return float(a.sum())


def array_double(a):
    return a * 2


def array_first_then_die(a):
    os.kill(os.getpid(), signal.SIGKILL)


_KEPT_ARRAYS: list = []


def keep_array_and_check_all_kept(a):
    """Keep every argument alive; True while none of them has changed under us."""
    _KEPT_ARRAYS.append((a, a.copy()))
    return all((kept == copy).all() for kept, copy in _KEPT_ARRAYS)


class Box:
    """A result that can be weakly referenced (to see who keeps it alive)."""

    def __init__(self, value):
        self.value = value


def make_box(x):
    return Box(x)


def sleep_then_fail_on(x, bad=3, seconds=0.02):
    """A short task that fails on one item (the others keep workers busy meanwhile)."""
    time.sleep(seconds)
    return fail_on(x, bad)


def send_through(channel, payload):
    """Write ``payload`` into a socket or a multiprocessing Connection passed as argument."""
    if hasattr(channel, "send_bytes"):
        channel.send_bytes(payload)
    else:
        channel.sendall(payload)
    channel.close()
    return len(payload)


# --- tasks for test_dask.py -------------------------------------------------------------------


def dask_worker_address(_=None):
    """The address of the Dask worker running this call (raises outside a Dask worker)."""
    from distributed import get_worker

    return get_worker().address


def kill_own_process(_=None):
    """SIGKILL whatever process runs this, every time."""
    os.kill(os.getpid(), signal.SIGKILL)


def tiny_sleep_square(x, seconds=0.0002):
    time.sleep(seconds)
    return x * x


def sum_of_array_plus(a, k):
    return float(a.sum()) + k
