"""``conveyor run``: GNU parallel's semantics, checked against GNU parallel itself.

The comparisons run both tools on the same invocation (skipped where GNU parallel is not
installed: Debian's ``parallel`` package); the rest are conveyor's own guarantees: a job
in its own process group killed whole on timeout and Ctrl-C, the job log's columns, the
exit status, input that is data and never code, bad options refused with 255.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import WAIT_S, wait_until

GNU = shutil.which("parallel")
needs_gnu = pytest.mark.skipif(GNU is None, reason="GNU parallel is not installed")
CONVEYOR = [sys.executable, "-m", "conveyor"]


def conveyor(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONVEYOR, "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=cwd,
    )


def gnu(*args: str, stdin: str | None = None, cwd=None) -> subprocess.CompletedProcess[str]:
    assert GNU is not None
    return subprocess.run(
        [GNU, "--will-cite", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        cwd=cwd,
    )


SAME_AS_GNU = [
    ("-k", "echo", ":::", "a", "b", "c"),
    ("-k", "echo", "{.}", "{/}", "{//}", "{/.}", "{#}", ":::", "/a/b.c", "d.e", "x/y"),
    ("-k", "echo", "{1}", "{2}", ":::", "a", "b", ":::", "1", "2"),
    ("-k", "echo", "{2}-{1}", "{-1}", ":::", "a", "b", ":::", "1", "2"),
    ("-k", "echo", ":::", "a", "b", ":::+", "1", "2", "3"),
    ("-k", "--link", "echo", ":::", "a", "b", "c", ":::", "1", "2"),
    ("-k", "--tag", "echo", "out", ":::", "x", "y"),
    ("-k", "echo", ":::", "a; echo injected", "$(echo pwned)", "it's", "`echo b`", "*"),
    ("-k", "-j", "1", "echo", "{%}", "{#}", ":::", "a", "b", "c"),
    ("-k", "echo {} | tr a-z A-Z", ":::", "lower", "case"),
    ("-k", "{}", ":::", "echo command from input"),
    ("--dry-run", "echo", ":::", "a b", "it's", "x$y"),
    ("-k", "exit {}", ":::", "0", "1", "2", "3"),
    ("-k", "--halt", "now,fail=1", "-j", "1", "echo {}; exit {}", ":::", "0", "4", "0"),
    ("-k", "--halt", "soon,fail=2", "-j", "1", "exit {}", ":::", "1", "1", "0", "0"),
    ("-k", "--halt", "now,success=1", "-j", "1", "exit {}", ":::", "3", "0", "0"),
]


@needs_gnu
@pytest.mark.parametrize("args", SAME_AS_GNU, ids=lambda a: " ".join(a)[:60])
def test_the_same_invocation_prints_and_exits_as_gnu_parallel(args):
    ours, theirs = conveyor(*args), gnu(*args)
    assert ours.stdout == theirs.stdout
    assert ours.returncode == theirs.returncode, (ours.stderr, theirs.stderr)


@needs_gnu
@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (("-k", "echo", "X{}X"), "a b\nc\n\nd"),
        (("-k", "-0", "echo", "[{}]"), "a\nb\0c\0"),
        (("-k", "-d", ",", "echo"), "x,y,z"),
    ],
    ids=["lines", "null", "delimiter"],
)
def test_records_from_stdin_split_as_gnu_parallel_splits_them(args, stdin):
    assert conveyor(*args, stdin=stdin).stdout == gnu(*args, stdin=stdin).stdout


@needs_gnu
def test_input_files_give_the_same_jobs_as_gnu_parallel(tmp_path):
    (tmp_path / "a.txt").write_text("1\n2\n")
    (tmp_path / "b.txt").write_text("x\ny\n")
    args = ("-k", "echo", "{1}{2}", "::::", "a.txt", "::::", "b.txt")
    assert conveyor(*args, cwd=tmp_path).stdout == gnu(*args, cwd=tmp_path).stdout


def test_input_is_data_never_code(tmp_path):
    done = conveyor("-k", "echo", ":::", "$(touch pwned)", "a; touch pwned2", cwd=tmp_path)
    assert done.stdout == "$(touch pwned)\na; touch pwned2\n"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_the_exit_status_counts_failures_and_caps_at_101():
    assert conveyor("exit 1", ":::", *["x"] * 5).returncode == 5
    assert conveyor("-j", "8", "exit 1", ":::", *["x"] * 120).returncode == 101
    assert conveyor("true", ":::", "a", "b").returncode == 0


def test_the_job_log_has_gnu_parallels_nine_columns(tmp_path):
    log = tmp_path / "log"
    done = conveyor("-k", "--joblog", str(log), "sleep 0.05; exit {}", ":::", "0", "3")
    assert done.returncode == 1
    header, *lines = log.read_text().splitlines()
    assert header.split("\t") == [
        "Seq",
        "Host",
        "Starttime",
        "JobRuntime",
        "Send",
        "Receive",
        "Exitval",
        "Signal",
        "Command",
    ]
    rows = [line.split("\t") for line in lines]
    assert [r[0] for r in rows] == ["1", "2"]
    assert [r[6] for r in rows] == ["0", "3"] and [r[7] for r in rows] == ["0", "0"]
    assert rows[1][8] == "sleep 0.05; exit 3"
    assert float(rows[0][3]) >= 0.05 and len(rows[0][3]) == 10  # GNU's %10.3f
    assert abs(float(rows[0][2]) - time.time()) < 60


def test_a_timeout_kills_the_job_and_everything_it_started(tmp_path):
    log = tmp_path / "log"
    pidfile = tmp_path / "pid"
    # The shell starts a grandchild that would outlive a kill of the shell alone.
    command = "sleep 30 & echo $! > {}; wait"
    done = conveyor("--timeout", "0.5", "--joblog", str(log), command, ":::", str(pidfile))
    assert done.returncode == 1
    row = log.read_text().splitlines()[1].split("\t")
    assert row[6] == "-1" and row[7] == str(int(signal.SIGTERM))
    grandchild = int(pidfile.read_text())
    wait_until(
        lambda: (
            not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == "zombie"
        ),
        "the grandchild's end",
    )
    assert "timed out" in done.stderr


def test_retries_run_a_failing_job_again_and_log_it_once(tmp_path):
    log = tmp_path / "log"
    counter = tmp_path / "n"
    # Fails twice, then succeeds.
    command = "echo x >> {}; test $(wc -l < {}) -ge 3"
    done = conveyor("--retries", "2", "--joblog", str(log), command, ":::", str(counter))
    assert done.returncode == 0
    assert counter.read_text().count("x") == 3
    assert len(log.read_text().splitlines()) == 2  # the header and one line


def test_output_of_a_job_is_kept_whole_and_stdout_comes_before_stderr():
    done = conveyor(
        "-j", "4", "for i in 1 2 3; do echo {}$i; sleep 0.01; done", ":::", "a", "b", "c", "d"
    )
    lines = done.stdout.splitlines()
    for job in "abcd":
        start = lines.index(f"{job}1")
        assert lines[start : start + 3] == [f"{job}1", f"{job}2", f"{job}3"]


def test_line_buffer_passes_whole_lines_as_they_come():
    done = conveyor("--line-buffer", "-j", "2", "echo {}; sleep 0.05; echo {}{}", ":::", "a", "b")
    assert sorted(done.stdout.splitlines()) == ["a", "aa", "b", "bb"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--bogus", "echo"), "unrecognized arguments"),
        (("-j", "many", "echo", ":::", "a"), "-j 'many'"),
        (("--halt", "sometimes", "echo", ":::", "a"), "--halt 'sometimes'"),
        (("--timeout=0", "echo", ":::", "a"), "--timeout must be"),
        (("echo", "::::", "/no/such/file"), "cannot read input file"),
    ],
)
def test_a_bad_command_line_is_refused_with_255_and_runs_nothing(args, message, tmp_path):
    done = conveyor(*args, cwd=tmp_path)
    assert done.returncode == 255
    assert message in done.stderr
    assert done.stdout == ""


def test_ctrl_c_stops_every_job_logs_them_and_exits_130(tmp_path):
    log = tmp_path / "log"
    proc = subprocess.Popen(
        [
            *CONVEYOR,
            "run",
            "-j",
            "2",
            "--joblog",
            str(log),
            "echo started {}; sleep 30",
            ":::",
            "a",
            "b",
            "c",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: len(_sleeps_under(proc.pid)) == 2, "two jobs running")
        sleeps = _sleeps_under(proc.pid)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    rows = [line.split("\t") for line in log.read_text().splitlines()[1:]]
    assert len(rows) == 2 and all(r[6] == "-1" for r in rows)  # logged, as interrupted
    for sleep in sleeps:
        wait_until(lambda s=sleep: not s.is_running() or s.status() == "zombie", "a job's end")


def _sleeps_under(pid: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "sleep"]
    except psutil.Error:
        return []


def test_python_dash_m_conveyor_and_the_console_script_are_the_same_program():
    script = shutil.which("conveyor", path=os.path.dirname(sys.executable))
    assert script is not None
    done = subprocess.run(
        [script, "run", "-k", "echo", ":::", "x"], capture_output=True, text=True, timeout=WAIT_S
    )
    assert done.stdout == "x\n"


def test_the_readme_command_lines_are_valid(tmp_path):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    lines = [
        line
        for block in re.findall(r"^```sh\n(.*?)^```", readme, re.S | re.M)
        for line in block.splitlines()
        if "conveyor run" in line
    ]
    assert len(lines) >= 3
    for name in ("a.txt", "b.txt", "c.wav"):
        (tmp_path / name).write_text("x")
    python_m = f"{sys.executable} -m conveyor run --dry-run"
    for line in lines:
        done = subprocess.run(
            line.replace("conveyor run", python_m),
            shell=True,
            capture_output=True,
            text=True,
            timeout=WAIT_S,
            cwd=tmp_path,
        )
        assert done.returncode == 0, (line, done.stderr)
        assert done.stdout.strip(), line


# --- resume --------------------------------------------------------------------------------

FAIL_ON_MULTIPLES_OF_3 = "echo {}; exit $(( {} % 3 == 0 ))"


def _log_rows(log) -> list[list[str]]:
    return [line.split("\t") for line in log.read_text().splitlines()[1:]]


def test_resume_failed_runs_only_the_failures_and_resume_skips_them_too(tmp_path):
    log = tmp_path / "log"
    first = conveyor("-k", "--joblog", str(log), FAIL_ON_MULTIPLES_OF_3, ":::", *"123456")
    assert first.returncode == 2
    again = conveyor(
        "-k", "--resume-failed", "--joblog", str(log), FAIL_ON_MULTIPLES_OF_3, ":::", *"1234567"
    )
    assert again.stdout.split() == ["3", "6", "7"]
    assert "4 jobs already done" in again.stderr
    once_more = conveyor(
        "-k", "--resume", "--joblog", str(log), FAIL_ON_MULTIPLES_OF_3, ":::", *"12345678"
    )
    assert once_more.stdout.split() == ["8"]  # finished jobs, failed or not, are done
    retried = conveyor("--retry-failed", "--joblog", str(log))
    assert sorted(retried.stdout.split()) == ["3", "6"]  # the log's failed commands, as they were


def test_resume_matches_jobs_by_content_whatever_their_position(tmp_path):
    log = tmp_path / "log"
    conveyor("-k", "--joblog", str(log), "echo", ":::", "a", "b", "c")
    # New input in front: by position, GNU parallel would skip "new" and "a" and run "c"
    # again; by fingerprint only "new" runs.
    again = conveyor("-k", "--resume", "--joblog", str(log), "echo", ":::", "new", "a", "b", "c")
    assert again.stdout.split() == ["new"]
    assert "the input changed" in again.stderr


def test_after_kill_9_resume_finishes_with_every_job_succeeding_exactly_once(tmp_path):
    log = tmp_path / "log"
    args = [
        *CONVEYOR,
        "run",
        "-j",
        "2",
        "--joblog",
        str(log),
        "sleep 0.1; echo {}",
        ":::",
        *map(str, range(1, 21)),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: log.exists() and len(_log_rows(log)) >= 6, "six jobs logged")
        jobs = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()  # kill -9: nothing is flushed, nothing logged
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for job in jobs:  # its jobs, in process groups of their own, outlive it
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    done = conveyor(
        "-j",
        "2",
        "--resume",
        "--joblog",
        str(log),
        "sleep 0.1; echo {}",
        ":::",
        *map(str, range(1, 21)),
    )
    assert done.returncode == 0
    succeeded = [int(r[0]) for r in _log_rows(log) if r[6] == "0"]
    assert sorted(succeeded) == list(range(1, 21))  # each exactly once


def test_a_job_log_cut_short_by_a_crash_is_read_and_a_malformed_one_refused(tmp_path):
    log = tmp_path / "gnu.log"
    header = "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n"
    log.write_text(header + "1\t:\t1.0\t   0.1\t0\t0\t0\t0\techo a\n2\t:\t1.0\t   0.1\t0\t0")
    done = conveyor("-k", "--resume", "--joblog", str(log), "echo", ":::", "a", "b")
    assert done.stdout.split() == ["b"]
    assert "cut short" in done.stderr and "by position" in done.stderr
    for journal in tmp_path.glob("gnu.log.journal*"):  # as a GNU parallel log has none
        journal.unlink()
    log.write_text(header + "1\tnot a line\n2\t:\t1.0\t   0.1\t0\t0\t0\t0\techo b\n")
    refused = conveyor("--resume", "--joblog", str(log), "echo", ":::", "a", "b")
    assert refused.returncode == 255 and "line 2" in refused.stderr and refused.stdout == ""


def test_resume_needs_a_job_log():
    done = conveyor("--resume", "echo", ":::", "a")
    assert done.returncode == 255 and "needs --joblog" in done.stderr


def test_results_keep_each_jobs_output_in_gnu_parallels_layout(tmp_path):
    results = tmp_path / "out"
    done = conveyor(
        "--results", str(results), "echo {1}-{2}; echo err >&2", ":::", "a", "b/c", ":::", "1"
    )
    assert done.returncode == 0
    job = results / "1" / "a" / "2" / "1"
    assert (job / "stdout").read_text() == "a-1\n"
    assert (job / "stderr").read_text() == "err\n"
    assert (job / "seq").read_text() == "1\n"
    assert (results / "1" / "b_c" / "2" / "1" / "stdout").read_text() == "b/c-1\n"
    assert not list(results.rglob(".std*"))  # written whole, then renamed
    assert sorted(done.stdout.split()) == ["a-1", "b/c-1"]  # and printed as well


def test_a_fresh_run_starts_its_journal_afresh_as_it_does_its_log(tmp_path):
    log = tmp_path / "log"
    conveyor("--joblog", str(log), "echo", ":::", "a", "b")
    conveyor("--joblog", str(log), "echo", ":::", "c")  # no --resume: a new log
    again = conveyor("-k", "--resume", "--joblog", str(log), "echo", ":::", "a", "c")
    assert again.stdout.split() == ["a"]  # "a" was done in a log since started afresh
