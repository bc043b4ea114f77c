"""``conveyor map module:func``: a Python function over JSON lines, a record out for each."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import TESTS_DIR, WAIT_S

MODULE = textwrap.dedent(
    """
    import os, signal, time

    def square(x):
        return x * x

    def add(a, b):
        return a + b

    def greet(name, punct="!"):
        return f"hi {name}{punct}"

    def fail_on_3(x):
        if x == 3:
            raise ValueError("three is bad")
        return x

    def hang_on_2(x):
        if x == 2:
            time.sleep(60)
        return x

    def die_on_4(x):
        if x == 4:
            os.kill(os.getpid(), signal.SIGKILL)
        return x

    def not_json(x):
        return {1, 2}
    """
)


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "jobs.py").write_text(MODULE)
    return tmp_path


def conveyor_map(workdir, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "map", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=workdir,
    )


def records(done: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_each_line_is_the_functions_argument_and_each_record_says_how_it_went(workdir, backend):
    done = conveyor_map(workdir, "-k", "--backend", backend, "jobs:square", stdin="1\n2\n3\n")
    assert done.returncode == 0, done.stderr
    assert records(done) == [
        {"seq": 1, "input": 1, "ok": True, "result": 1},
        {"seq": 2, "input": 2, "ok": True, "result": 4},
        {"seq": 3, "input": 3, "ok": True, "result": 9},
    ]


def test_a_list_or_an_object_is_spread_into_arguments_when_asked(workdir):
    star = conveyor_map(workdir, "-k", "--star", "jobs:add", stdin="[1, 2]\n[3, 4]\n")
    assert [r["result"] for r in records(star)] == [3, 7]
    kwargs = conveyor_map(workdir, "--kwargs", "jobs:greet", stdin='{"name": "a", "punct": "?"}\n')
    assert records(kwargs)[0]["result"] == "hi a?"


def test_a_record_that_raises_or_is_not_json_fails_alone_and_the_rest_run(workdir):
    done = conveyor_map(workdir, "-k", "jobs:fail_on_3", stdin="1\n3\nnot json\n4\n")
    assert done.returncode == 2  # GNU's status: the number of failures
    out = records(done)
    assert [r["ok"] for r in out] == [True, False, False, True]
    raised, garbled = out[1]["error"], out[2]["error"]
    assert raised["type"] == "ValueError" and raised["message"] == "three is bad"
    assert "fail_on_3" in raised["traceback"] and "_map.py" not in raised["traceback"]
    assert garbled["type"] == "JSONDecodeError" and out[2]["input"] == "not json"


def test_a_result_that_is_not_json_is_that_records_error(workdir):
    out = records(conveyor_map(workdir, "jobs:not_json", stdin="1\n"))
    assert out[0]["ok"] is False and out[0]["error"]["type"] == "TypeError"


def test_a_timeout_or_a_dead_worker_costs_only_that_record_and_is_logged(workdir):
    log = workdir / "log"
    done = conveyor_map(
        workdir,
        "-k",
        "--timeout",
        "1",
        "--retries",
        "0",
        "--joblog",
        str(log),
        "jobs:hang_on_2",
        stdin="1\n2\n3\n",
    )
    out = records(done)
    assert [r["ok"] for r in out] == [True, False, True]
    assert out[1]["error"]["type"] == "TaskTimeoutError"
    rows = [line.split("\t") for line in log.read_text().splitlines()[1:]]
    assert [r[6] for r in rows] == ["0", "-1", "0"]
    assert rows[1][8] == "jobs:hang_on_2 2"
    died = records(conveyor_map(workdir, "-k", "--retries", "0", "jobs:die_on_4", stdin="4\n5\n"))
    assert died[0]["error"]["type"] == "WorkerCrashedError" and died[1]["result"] == 5


def test_resume_skips_the_records_that_succeeded_by_content(workdir):
    log = workdir / "log"
    first = conveyor_map(workdir, "-k", "--joblog", str(log), "jobs:fail_on_3", stdin="1\n3\n")
    assert first.returncode == 1
    again = conveyor_map(
        workdir,
        "-k",
        "--resume-failed",
        "--joblog",
        str(log),
        "jobs:fail_on_3",
        stdin="0\n1\n3\n",
    )
    assert [r["input"] for r in records(again)] == [0, 3]  # 1 succeeded, wherever it stands


def test_halt_stops_at_the_first_failure_with_its_status(workdir):
    done = conveyor_map(
        workdir,
        "-k",
        "-j",
        "1",
        "--halt",
        "now,fail=1",
        "jobs:fail_on_3",
        stdin="".join(f"{i}\n" for i in [1, 3, 5, 6, 7, 8, 9]),
    )
    assert done.returncode == 1  # the failing record's own status
    assert [r["input"] for r in records(done)][-1] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nosuchmodule:f",), "cannot import 'nosuchmodule'"),
        (("jobs:nosuchfunction",), "has no function 'nosuchfunction'"),
        (("jobs",), "expected module:function"),
        (("--backend", "gpu", "jobs:square"), "invalid choice"),
    ],
)
def test_a_bad_function_or_option_is_refused_with_255(workdir, args, message):
    done = conveyor_map(workdir, *args, stdin="1\n")
    assert done.returncode == 255 and message in done.stderr and done.stdout == ""


def test_records_run_on_a_real_dask_cluster(dask_cluster):
    # The cluster's workers import the tests' modules, as a real cluster imports the code.
    done = conveyor_map(
        TESTS_DIR,
        "-k",
        "--backend",
        "dask",
        "--scheduler",
        dask_cluster.address,
        "pipeline_tasks:square",
        stdin="1\n2\n3\n",
    )
    assert done.returncode == 0, done.stderr
    assert [r["result"] for r in records(done)] == [1, 4, 9]


def test_the_scheduler_option_needs_the_dask_backend(workdir):
    done = conveyor_map(workdir, "--scheduler", "tcp://127.0.0.1:1", "jobs:square", stdin="1\n")
    assert done.returncode == 255 and "--backend dask" in done.stderr
