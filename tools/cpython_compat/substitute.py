"""Put conveyor's classes where CPython's test modules look for the stdlib's.

Nothing here patches the stdlib itself.  A test module reaches the pools through its own
globals (``multiprocessing.Pool(...)``, ``futures.ProcessPoolExecutor(...)``) and through
mixin classes defined in the test package; we replace those globals with *overlay*
modules (a stand-in module that answers the overridden names and forwards everything else
to the real module) and set the mixins' attributes.  The rest of the process, including
``concurrent.futures.wait`` and the stdlib pool machinery, is untouched.

The one exception is a fresh interpreter that a test starts to run a script of its own
(``script_helper.assert_python_ok``): that child has nothing but the stdlib, so we prepend
a prelude to its code that sets conveyor's classes on the stdlib modules of that
throwaway interpreter.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

TARGETS = ("conveyor", "stdlib")


def overlay(module: types.ModuleType, **overrides: Any) -> types.ModuleType:
    """A module that answers ``overrides`` and forwards any other name to ``module``.

    Forwarding (instead of copying the namespace) keeps later changes to the real module,
    such as ``unittest.mock.patch`` on it, visible through the overlay.
    """
    stand_in = types.ModuleType(module.__name__, module.__doc__)
    stand_in.__dict__.update(overrides)
    # PEP 562: a module-level __getattr__ is consulted for names not in the namespace.
    stand_in.__dict__["__getattr__"] = lambda name: getattr(module, name)
    return stand_in


# --- subprocess scripts ---------------------------------------------------------------


def with_prelude(assert_python: Callable[..., Any], prelude: str) -> Callable[..., Any]:
    """Wrap script_helper.assert_python_ok/failure so the child runs ``prelude`` first.

    Handles the two forms the selected tests use: ``('-c', code)`` and ``(script_path,)``.
    """

    def run_with_prelude(*args: Any, **env_vars: Any) -> Any:
        return assert_python(*_inject_prelude(args, prelude), **env_vars)

    return run_with_prelude


def _inject_prelude(args: tuple[Any, ...], prelude: str) -> tuple[Any, ...]:
    if len(args) >= 2 and args[0] == "-c":
        return ("-c", prelude + args[1], *args[2:])
    if args and isinstance(args[0], str) and not args[0].startswith("-"):
        script = args[0]
        # run_path as __main__ keeps `if __name__ == "__main__":` and __main__.__file__
        # (which multiprocessing's spawn uses) as they would be for `python script`.
        runner = (
            "import runpy, sys\n"
            f"sys.argv[0] = {script!r}\n"
            f"runpy.run_path({script!r}, run_name='__main__')\n"
        )
        return ("-c", prelude + runner, *args[1:])
    return args


POOL_PRELUDE = (
    "import conveyor, multiprocessing, multiprocessing.pool, multiprocessing.dummy\n"
    "multiprocessing.Pool = multiprocessing.pool.Pool = conveyor.Pool\n"
    "multiprocessing.pool.ThreadPool = multiprocessing.dummy.Pool = conveyor.ThreadPool\n"
)

EXECUTOR_PRELUDE = (
    "import conveyor, concurrent.futures\n"
    "concurrent.futures.ProcessPoolExecutor = conveyor.ProcessPoolExecutor\n"
    "concurrent.futures.ThreadPoolExecutor = conveyor.ThreadPoolExecutor\n"
)


# --- multiprocessing ------------------------------------------------------------------


def substitute_pools(test_module: types.ModuleType) -> None:
    """Make test._test_multiprocessing use conveyor's pools, queues, Pipe and Manager."""
    import multiprocessing
    import multiprocessing.dummy
    import multiprocessing.pool

    import conveyor

    # self.Pool in the generated With<Type>TestPool classes comes from these mixins, and
    # so do self.Queue, self.JoinableQueue and self.Pipe in the queue and connection tests.
    test_module.ProcessesMixin.Pool = staticmethod(conveyor.Pool)
    test_module.ThreadsMixin.Pool = staticmethod(conveyor.ThreadPool)
    test_module.ProcessesMixin.Queue = staticmethod(conveyor.Queue)
    test_module.ProcessesMixin.JoinableQueue = staticmethod(conveyor.JoinableQueue)
    test_module.ProcessesMixin.Pipe = staticmethod(conveyor.Pipe)

    # TestSyncManagerTypes.setUp does self.manager_class() then .start(); the class
    # attribute was bound to multiprocessing.managers.SyncManager when the module loaded.
    test_module.TestSyncManagerTypes.manager_class = staticmethod(unstarted_manager)

    # Other tests call multiprocessing.Pool(...) / multiprocessing.pool.Pool(...) directly,
    # and ManagerMixin.setUpClass (the WithManagerTest* classes) and TestInitializers.setUp
    # call multiprocessing.Manager().
    test_module.multiprocessing = overlay(
        multiprocessing,
        Pool=conveyor.Pool,
        Manager=conveyor.Manager,
        SimpleQueue=conveyor.SimpleQueue,
        pool=overlay(multiprocessing.pool, Pool=conveyor.Pool, ThreadPool=conveyor.ThreadPool),
        dummy=overlay(multiprocessing.dummy, Pool=conveyor.ThreadPool),
    )

    # Tests that run a script in a fresh interpreter reach script_helper two ways.
    script_helper = test_module.script_helper
    patched_helper = overlay(
        script_helper,
        assert_python_ok=with_prelude(script_helper.assert_python_ok, POOL_PRELUDE),
        assert_python_failure=with_prelude(script_helper.assert_python_failure, POOL_PRELUDE),
    )
    test_module.script_helper = patched_helper
    test_package = test_module.test  # the `test` package, bound by `import test.support`
    test_module.test = overlay(
        test_package, support=overlay(test_package.support, script_helper=patched_helper)
    )


def unstarted_manager() -> Any:
    """What TestSyncManagerTypes gets for ``SyncManager()``: a manager it starts itself."""
    import conveyor

    return conveyor.Manager(start=False)


# --- concurrent.futures ---------------------------------------------------------------


def substitute_executors(util: types.ModuleType, test_modules: list[types.ModuleType]) -> None:
    """Make test.test_concurrent_futures use conveyor's executors.

    ``util`` is the package's util.py, whose mixins carry ``executor_type``; the classes
    generated from them are already built, but look the attribute up at run time.
    """
    import concurrent.futures

    import conveyor

    util.ThreadPoolMixin.executor_type = conveyor.ThreadPoolExecutor
    for name in ("ProcessPoolForkMixin", "ProcessPoolForkserverMixin", "ProcessPoolSpawnMixin"):
        getattr(util, name).executor_type = conveyor.ProcessPoolExecutor

    futures = overlay(
        concurrent.futures,
        ProcessPoolExecutor=conveyor.ProcessPoolExecutor,
        ThreadPoolExecutor=conveyor.ThreadPoolExecutor,
    )
    for module in test_modules:
        # Some tests build executors as futures.ThreadPoolExecutor(...) directly.
        if getattr(module, "futures", None) is concurrent.futures:
            module.futures = futures
        # test_shutdown imports assert_python_ok by name for its at-exit scripts.
        if hasattr(module, "assert_python_ok"):
            module.assert_python_ok = with_prelude(module.assert_python_ok, EXECUTOR_PRELUDE)
