"""The pool's connection to a Dask cluster, and what the cluster's workers are.

``client=`` is a ``distributed.Client`` (the pool uses it and leaves it open), a scheduler
address such as ``"tcp://host:8786"`` (the pool connects, and disconnects when it ends),
or None: then ``CONVEYOR_DASK_SCHEDULER`` if set, else a ``LocalCluster`` of the pool's own
(worker processes, one thread each), closed with the pool.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from ..._cpus import available_cpus

logger = logging.getLogger("conveyor.dask")

SCHEDULER_ENV = "CONVEYOR_DASK_SCHEDULER"
# How long connecting to a scheduler, or one question to it, may take.
CONNECT_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0


def import_distributed() -> Any:
    """``distributed``, or an ImportError that names the extra to install."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs Dask's distributed package: pip install 'conveyor[dask]'"
        ) from exc
    return distributed


@dataclass(frozen=True)
class WorkerInfo:
    """One Dask worker, as the scheduler describes it (keyed by its address)."""

    nthreads: int
    nanny: str | None  # a nanny can restart the worker (conveyor's way to stop a task)


class Cluster:
    """A client on a scheduler; closes only what it opened itself."""

    def __init__(self, client: Any, workers: int | None) -> None:
        distributed = import_distributed()
        if client is None:
            client = os.environ.get(SCHEDULER_ENV) or None
        self._own_client = False
        self._own_cluster: Any = None
        if isinstance(client, distributed.Client):
            self.client = client
        elif isinstance(client, str):
            self.client = _connect(distributed, client)
            self._own_client = True
        elif client is None:
            self._own_cluster = distributed.LocalCluster(
                n_workers=workers or available_cpus(),
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",  # a free port: never a clash with another cluster
            )
            self.client = distributed.Client(self._own_cluster, set_as_default=False)
            self._own_client = True
        else:
            raise TypeError(
                "client must be a distributed.Client, a scheduler address such as "
                f"'tcp://host:8786', or None, not {type(client).__name__}"
            )

    @property
    def address(self) -> str:
        return str(self.client.scheduler.address)

    def workers(self) -> dict[str, WorkerInfo]:
        """The workers the scheduler has now (a round trip to it)."""
        identity = self.client.sync(
            self.client.scheduler.identity, n_workers=-1, callback_timeout=RPC_TIMEOUT_S
        )
        return {
            address: WorkerInfo(int(info.get("nthreads", 1)), info.get("nanny"))
            for address, info in identity.get("workers", {}).items()
        }

    def close(self) -> None:
        """Close the client and the cluster if this pool made them; never raises."""
        if self._own_client:
            try:
                self.client.close(timeout=CLOSE_TIMEOUT_S)
            except Exception as exc:
                logger.warning("closing the Dask client failed: %r", exc)
        if self._own_cluster is not None:
            try:
                self._own_cluster.close(timeout=CLOSE_TIMEOUT_S)
            except Exception as exc:
                logger.warning("closing the pool's LocalCluster failed: %r", exc)


def _connect(distributed: Any, address: str) -> Any:
    try:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except OSError as exc:
        raise OSError(
            f"cannot connect to the Dask scheduler at {address!r} within "
            f"{CONNECT_TIMEOUT_S:.0f} s: {exc}"
        ) from exc


def gather_within(client: Any, futures: list[Any], timeout_s: float = RPC_TIMEOUT_S) -> Any:
    """``client.gather(futures)``, but at most ``timeout_s``.

    A future that finished on a worker that died before its answer was fetched is
    recomputed by the scheduler ("Couldn't gather ... rescheduling"), and a plain
    ``gather`` waits for that, forever if the task kills its worker each time. The public
    ``gather`` takes no timeout; ``Client.sync`` does, around the coroutine it runs.
    """
    return client.sync(client._gather, futures, callback_timeout=timeout_s)


__all__ = ["SCHEDULER_ENV", "Cluster", "WorkerInfo", "gather_within", "import_distributed"]
