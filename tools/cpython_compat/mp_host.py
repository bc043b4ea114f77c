"""Host module of the multiprocessing pool tests.

CPython's ``test_multiprocessing_<start method>`` packages are thin modules that call
``install_tests_in_module_dict(globals(), start_method)``; this module plays that role.
It must be importable by name in every process: worker processes unpickle test classes
(``WithProcessesTestPool._test_traceback`` is pickled by reference to this module), and
the forkserver preloads it so that processes forked from it see the same substitution.

Importing it applies the target read from the environment (see suites.TARGET_ENV).
"""

from __future__ import annotations

import multiprocessing
import os

from test import _test_multiprocessing as cpython_tests
from tools.cpython_compat import substitute, suites

TARGET = os.environ.get(suites.TARGET_ENV, "conveyor")
START_METHOD = os.environ.get(suites.START_METHOD_ENV, "forkserver")

if TARGET == "conveyor":
    substitute.substitute_pools(cpython_tests)

cpython_tests.install_tests_in_module_dict(globals(), START_METHOD)

_cpython_set_up_module = globals()["setUpModule"]


def setUpModule() -> None:
    _cpython_set_up_module()
    # CPython preloads its own test module; add this one so that a process forked from the
    # forkserver (e.g. test_pool_in_process's child) has the substitution applied too.
    multiprocessing.set_forkserver_preload([*cpython_tests.PRELOAD, __name__])
