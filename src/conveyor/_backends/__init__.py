"""Backends, found by name: each is one module, imported the first time it is asked for.

A backend module implements the contract of ``_engine/_contract.py`` and exposes
``create(setup: WorkerSetup) -> Backend``. Adding one (``"dask"``) is one module and one
line here; no engine or face changes.
"""

from __future__ import annotations

import importlib
from typing import cast

from .._engine._contract import Backend, BackendFactory, WorkerSetup

# name -> module (relative to this package) whose ``create`` builds the backend
MODULES = {
    "process": "._process._backend",
    "thread": "._thread",
}


def names() -> tuple[str, ...]:
    return tuple(MODULES)


def create(name: str, setup: WorkerSetup) -> Backend:
    """Build the backend called ``name``; a name not registered is a ``ValueError``."""
    try:
        module_name = MODULES[name]
    except (KeyError, TypeError):
        choices = " or ".join(repr(n) for n in MODULES)
        raise ValueError(f"backend must be {choices}, not {name!r}") from None
    module = importlib.import_module(module_name, __name__)
    factory = cast(BackendFactory, module.create)
    return factory(setup)


__all__ = ["create", "names"]
