"""Backends, found by name: each is one module, imported the first time it is asked for.

A backend module implements the contract of ``_engine/_contract.py`` and exposes
``create(setup: WorkerSetup) -> Backend``. Adding one (``"dask"``) is one module and one
line here; no engine or face changes.
"""

from __future__ import annotations

import importlib
import os
from typing import cast

from .._engine._contract import Backend, BackendFactory, WorkerSetup

# name -> module (relative to this package) whose ``create`` builds the backend
MODULES = {
    "process": "._process._backend",
    "thread": "._thread",
    "dask": "._dask._backend",
}


# Runs code written for process pools on another backend without editing it, e.g.
# ``CONVEYOR_BACKEND=dask CONVEYOR_DASK_SCHEDULER=tcp://host:8786 python job.py``.
BACKEND_ENV = "CONVEYOR_BACKEND"


def names() -> tuple[str, ...]:
    return tuple(MODULES)


def choose(requested: str | None, face_default: str) -> str:
    """The backend a pool runs on: the one asked for, else the face's default.

    A face whose default is ``"process"`` (``Pool``, ``ProcessPoolExecutor``,
    ``WorkerPool``, ``conveyor.map``) takes ``CONVEYOR_BACKEND`` instead when it is set;
    thread pools stay threads.
    """
    if requested is not None:
        check(requested)
        return requested
    if face_default == "process":
        from_env = os.environ.get(BACKEND_ENV)
        if from_env:
            if from_env not in MODULES:
                choices = ", ".join(MODULES)
                raise ValueError(f"{BACKEND_ENV}={from_env!r} is not a backend ({choices})")
            return from_env
    return face_default


def check(name: object) -> None:
    """A ``ValueError`` naming the choices, for a name that is not a backend."""
    if not isinstance(name, str) or name not in MODULES:
        *most, last = [repr(n) for n in MODULES]
        raise ValueError(f"backend must be {', '.join(most)} or {last}, not {name!r}")


def create(name: str, setup: WorkerSetup) -> Backend:
    """Build the backend called ``name``; a name not registered is a ``ValueError``."""
    check(name)
    module = importlib.import_module(MODULES[name], __name__)
    factory = cast(BackendFactory, module.create)
    return factory(setup)


__all__ = ["BACKEND_ENV", "check", "choose", "create", "names"]
