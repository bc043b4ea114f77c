"""The Dask backend: engine slots on the threads of a Dask cluster's workers.

Each engine slot is one thread of one Dask worker; each chunk, one Dask task pinned to
that worker, so the engine's rules hold as with local processes (see ``_handle.py``).
``_supervisor.py`` reads the answers and watches the cluster; ``_shipping.py`` pickles
and scatters; ``_remote.py`` runs on the workers. A per-task timeout or the cancel of a
running task restarts the worker that runs it, through its nanny: that is the only way
Dask offers to stop a running task, and without nannies a timeout is refused.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid

from ..._deadline import Deadline
from ..._engine._contract import Capabilities, EngineEvents, Pacing, WorkerSetup
from ..._engine._jobs import Chunk, Job
from ..._engine._states import Slot
from ._cluster import RPC_TIMEOUT_S, Cluster, WorkerInfo, import_distributed
from ._handle import DaskWorker
from ._remote import PoolPlugin, kill_this_worker, pack_setup
from ._shipping import Shipping
from ._supervisor import NO_WORKER_TIMEOUT_S, Supervisor

logger = logging.getLogger("conveyor.dask")

# A Dask task costs milliseconds (client, scheduler and worker each batch their messages
# every few ms): chunks aim at 100 ms of work, as Dask's own guidance says, and a worker
# holds enough of them to stay busy through a ~20 ms round trip.
DASK_PACING = Pacing(
    target_chunk_s=0.1,
    min_chunk_s=0.02,
    prefetch_below_s=1.0,
    hold_s=0.03,
    max_held_chunks=8,
    max_held_bytes=16 << 20,
)
REGISTER_ATTEMPTS = 5
_NO_NANNY = (
    "per-task timeouts on Dask need workers that a nanny can restart (the default of "
    "`dask worker` and LocalCluster; not --no-nanny): restarting its worker is the only way "
    "to stop a running Dask task"
)


class DaskBackend:
    name = "dask"

    def __init__(self, setup: WorkerSetup) -> None:
        _refuse_unsupported(setup)
        import_distributed()
        self.setup = setup
        self.token = uuid.uuid4().hex[:12]
        self.cluster = Cluster(setup.client, setup.workers)
        self.client = self.cluster.client
        try:
            known = self._wait_for_workers()
            restartable = bool(known) and all(w.nanny for w in known.values())
            self.capabilities = Capabilities(
                can_kill=restartable,
                pickles=True,
                remote=True,
                pacing=DASK_PACING,
                no_timeouts=None if restartable else _NO_NANNY,
                sends_before_ready=False,  # a slot may wait seconds for a worker
            )
            self._register_plugin(setup)
        except BaseException:
            self.cluster.close()
            raise
        self.shipping = Shipping(self.client)
        self.supervisor = Supervisor(self.cluster, known, setup.remote_traceback_type)
        self._restarts: list[threading.Thread] = []
        self._closed = False

    # --- the contract ---------------------------------------------------------------------

    def default_size(self) -> int:
        return self.supervisor.total_threads

    def bind(self, events: EngineEvents) -> None:
        self.supervisor.bind(events)

    def spawn(self, slot: Slot) -> DaskWorker:
        handle = DaskWorker(self, slot)
        self.supervisor.add(handle)
        return handle

    def start(self) -> None:
        self.supervisor.start()

    def abort_start(self) -> None:
        self.supervisor.stop()
        self._close()

    def prepare(self, job: Job) -> None:
        """Pickle the job's function once; a big one (a closure over an array) is scattered."""
        if job.options.timeout is not None and self.capabilities.no_timeouts:
            raise ValueError(self.capabilities.no_timeouts)
        job.shipped = self.shipping.function(job.fn)

    def deadline_changed(self) -> None:
        self.supervisor.wake()

    def stop_supervision(self) -> None:
        self.supervisor.stop()

    def shutdown(self, timeout: float | None) -> bool:
        deadline = Deadline(timeout)
        ended = self.supervisor.join(deadline.remaining())
        for thread in self._restarts:
            thread.join(deadline.remaining())
        self._close()
        return ended

    # --- for the handles (any thread; the engine's lock may be held) ----------------------

    def encode_items(self, chunk: Chunk) -> tuple[bytes, list[object]]:
        return self.shipping.items(chunk)

    def post_done(self, handle: DaskWorker, key: str) -> None:
        self.supervisor.post_done(handle, key)

    def post_exit(self, handle: DaskWorker, exitcode: int | None) -> None:
        self.supervisor.post_exit(handle, exitcode)

    def restart_worker(self, address: str) -> None:
        """Restart a Dask worker through its nanny, from a thread of its own."""
        self.supervisor.doom(address)
        thread = threading.Thread(
            target=self._restart, args=(address,), name="conveyor-dask-restart", daemon=True
        )
        self._restarts.append(thread)
        thread.start()

    # --- Dask calls -----------------------------------------------------------------------

    def _wait_for_workers(self) -> dict[str, WorkerInfo]:
        deadline = Deadline(NO_WORKER_TIMEOUT_S)
        while True:
            known = self.cluster.workers()
            if known or deadline.expired:
                return known
            time.sleep(0.1)

    def _register_plugin(self, setup: WorkerSetup) -> None:
        blob = pack_setup(
            setup.initializer,
            setup.initargs,
            setup.worker_state,
            setup.stdlib_results,
            setup.result_error,
        )
        plugin = PoolPlugin(self.token, blob)
        for attempt in itertools.count(1):
            try:
                self.client.register_plugin(plugin, name=self._plugin_name)
                return
            except (ImportError, AttributeError) as exc:
                raise ImportError(
                    f"the Dask workers at {self.cluster.address} cannot load conveyor "
                    f"({exc!r}): install conveyor, the same version as here, on every worker"
                ) from exc
            except OSError:
                # The scheduler drops the call when a worker leaves during its broadcast
                # (one restarting after a timeout): the next attempt reaches the others,
                # and a worker that joins later gets the plugin when it registers.
                if attempt >= REGISTER_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)

    @property
    def _plugin_name(self) -> str:
        return f"conveyor-{self.token}"

    def _restart(self, address: str) -> None:
        """Kill the worker process; its nanny starts a fresh one (at a new address).

        Not ``Client.restart_workers``: that waits for the running task to end for a few
        seconds before it kills, then for the worker to return, and under load it timed
        out with the scheduler still waiting. A kill is what a crash does, and the nanny
        restarts a crashed worker within a second.
        """
        try:
            self.client.run(kill_this_worker, workers=[address], wait=False)
            logger.info("Dask worker %s killed to stop an overdue or cancelled task", address)
        except Exception as exc:
            logger.warning(
                "could not kill Dask worker %s to stop its task (%r); the task may run on",
                address,
                exc,
            )

    def _close(self) -> None:
        """Unregister the pool from the workers, then close what the pool opened."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.client.status == "running":
                self.client.sync(
                    self.client.scheduler.unregister_worker_plugin,
                    name=self._plugin_name,
                    callback_timeout=RPC_TIMEOUT_S,
                )
        except Exception as exc:
            logger.debug("unregistering the pool's worker plugin failed: %r", exc)
        self.shipping.forget()
        self.cluster.close()


def _refuse_unsupported(setup: WorkerSetup) -> None:
    """Options Dask cannot honour are errors now, never silent no-ops."""
    if setup.max_tasks is not None:
        raise ValueError(
            "the dask backend cannot recycle workers after a number of tasks "
            "(max_tasks_per_worker / maxtasksperchild): Dask's workers belong to the cluster"
        )
    if setup.shared is not None:
        raise ValueError(
            "the dask backend does not take shared= yet: scatter the object with the Dask "
            "client (client.scatter(obj, broadcast=True)) and pass the future to the tasks"
        )
    if setup.max_memory is not None:
        raise ValueError(
            "the dask backend does not take max_worker_memory: give the Dask workers a "
            "memory_limit (their nanny restarts a worker that passes it)"
        )
    if setup.context is not None:
        # Not a capability but a detail of local processes: code written for Pool(context=)
        # moves to Dask unchanged (CONVEYOR_BACKEND), and is told.
        logger.warning(
            "the dask backend ignores context=%r: Dask starts its own workers", setup.context
        )


def create(setup: WorkerSetup) -> DaskBackend:
    return DaskBackend(setup)


__all__ = ["DASK_PACING", "DaskBackend", "create"]
