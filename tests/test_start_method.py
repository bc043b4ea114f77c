"""Which start method a pool uses: the program's choice first, then each face's default."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent(
    """
    import multiprocessing, sys
    import conveyor

    def method_of(face):
        return face._core.engine.backend.ctx.get_start_method()

    if __name__ == "__main__":
        if sys.argv[1] != "-":
            multiprocessing.set_start_method(sys.argv[1])
        faces = {
            "Pool": conveyor.Pool(1),
            "ProcessPoolExecutor": conveyor.ProcessPoolExecutor(1),
            "WorkerPool": conveyor.WorkerPool(1),
            "WorkerPool(context='spawn')": conveyor.WorkerPool(1, context="spawn"),
        }
        for name, face in faces.items():
            if name == "Pool":
                assert face.apply(pow, (2, 5)) == 32
            else:
                assert face.submit(pow, 2, 5).result(timeout=30) == 32
            print(name, method_of(face))
            face.shutdown() if name == "ProcessPoolExecutor" else face.terminate()
    """
)


def _methods(tmp_path, chosen: str) -> dict[str, str]:
    script = tmp_path / "which_method.py"
    script.write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, str(script), chosen], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return dict(line.rsplit(" ", 1) for line in done.stdout.splitlines())


@pytest.mark.skipif(sys.platform != "linux", reason="the defaults below are Linux's")
def test_without_a_choice_drop_ins_use_the_stdlib_default_and_conveyor_forkserver(tmp_path):
    import multiprocessing

    stdlib_default = multiprocessing.get_all_start_methods()[0]
    assert _methods(tmp_path, "-") == {
        "Pool": stdlib_default,
        "ProcessPoolExecutor": stdlib_default,
        "WorkerPool": "forkserver",
        "WorkerPool(context='spawn')": "spawn",
    }


@pytest.mark.parametrize("chosen", ["spawn", "forkserver", "fork"])
def test_a_start_method_the_program_set_is_honoured_by_every_face(tmp_path, chosen):
    import multiprocessing

    # conveyor's own API cannot tell the platform's default set by the program from the
    # same default fixed by multiprocessing itself, so it keeps forkserver for that one.
    platform_default = multiprocessing.get_all_start_methods()[0]
    workerpool = "forkserver" if chosen == platform_default else chosen
    assert _methods(tmp_path, chosen) == {
        "Pool": chosen,
        "ProcessPoolExecutor": chosen,
        "WorkerPool": workerpool,
        "WorkerPool(context='spawn')": "spawn",
    }


def test_conveyor_pools_keep_forkserver_after_multiprocessing_fixed_its_default(tmp_path):
    # Starting a forkserver worker makes multiprocessing fix its default start method as
    # if the program had chosen it; the pools made after the first must not follow it.
    script = tmp_path / "many_pools.py"
    script.write_text(
        "import conveyor\n"
        "if __name__ == '__main__':\n"
        "    for _ in range(3):\n"
        "        with conveyor.WorkerPool(1) as pool:\n"
        "            pool.submit(abs, -1).result(timeout=30)\n"
        "            print(pool._core.engine.backend.ctx.get_start_method())\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["forkserver"] * 3
