"""Pipelines: stages of processes, threads and coroutines, bounded between them.

Every test checks the books (``report.check()``: every item read from the source ended
emitted, filtered, failed or cancelled, stage by stage) and, through ``conftest``, that
no process or thread was left behind. Faults are real: SIGKILL, timeouts, Ctrl-C.
"""

from __future__ import annotations

import functools
import gc
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

import conveyor
import pipeline_tasks as pt
from conftest import TESTS_DIR, WAIT_S, wait_until
from conveyor import Pipeline


def books_balance(pipeline: Pipeline) -> conveyor.PipelineReport:
    report = pipeline.report
    assert report is not None
    report.check()
    return report


# --- what comes out ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_an_ordered_pipeline_equals_the_builtin_chain_with_filter_and_flat_map(backend):
    items = range(600)
    pipeline = (
        Pipeline(items)
        .map(pt.jitter_square, backend=backend, workers=3)
        .filter(pt.is_even, backend=backend, workers=2)
        .flat_map(pt.children, backend="thread", workers=2)
    )
    got = list(pipeline)
    expected = [c for x in map(pt.square, items) if pt.is_even(x) for c in pt.children(x)]
    assert got == expected
    report = books_balance(pipeline)
    assert report.outcome == "finished"
    assert report.admitted == 600
    assert report.emitted == len(expected)
    filter_stage, flat_stage = report.stages[1], report.stages[2]
    assert filter_stage.filtered == 300
    assert flat_stage.filtered == sum(
        1 for x in map(pt.square, items) if pt.is_even(x) and x % 3 == 0
    )


def test_a_dask_stage_runs_on_a_real_cluster_between_local_stages(dask_client):
    pipeline = (
        Pipeline(range(300))
        .map(pt.square, backend="thread")
        .map(pt.jitter_square, backend="dask", client=dask_client)
        .filter(pt.is_even, backend="process", workers=2)
    )
    assert list(pipeline) == [y for y in (x**4 for x in range(300)) if y % 2 == 0]
    report = books_balance(pipeline)
    assert report.stages[1].backend == "dask"


def test_an_unordered_stage_yields_every_item_exactly_once():
    pipeline = Pipeline(range(500)).map(
        pt.jitter_square, backend="thread", workers=4, ordered=False
    )
    got = list(pipeline)
    assert sorted(got) == sorted(x * x for x in range(500))
    books_balance(pipeline)


def test_outputs_stream_out_before_the_source_ends():
    first_seen = threading.Event()

    def source():
        yield from range(5)
        # The consumer must see output while the source is still going: no waiting for
        # the whole input.
        assert first_seen.wait(WAIT_S), "no output came out while the source was open"
        yield from range(5, 10)

    pipeline = Pipeline(source()).map(pt.square, backend="thread", workers=2)
    got = []
    for value in pipeline:
        got.append(value)
        first_seen.set()
    assert got == [x * x for x in range(10)]
    books_balance(pipeline)


def test_each_consumes_items_and_counts_them_emitted():
    seen = []
    lock = threading.Lock()

    def keep(x):
        with lock:
            seen.append(x)

    report = (
        Pipeline(range(100)).map(pt.square, backend="thread").each(keep, backend="thread").run()
    )
    assert sorted(seen) == [x * x for x in range(100)]
    assert (report.admitted, report.emitted) == (100, 100)
    report.check()


def test_batch_groups_items_in_order_and_sends_the_remainder_at_the_end():
    pipeline = Pipeline(range(23)).map(pt.square, backend="thread").batch(5)
    got = list(pipeline)
    squares = [x * x for x in range(23)]
    assert got == [squares[i : i + 5] for i in range(0, 23, 5)]
    report = books_balance(pipeline)
    assert report.stages[1].outputs == 5
    assert report.stages[1].emitted == 23


def test_a_batch_goes_out_part_full_once_its_first_item_waited_max_wait():
    release_source = threading.Event()

    def source():
        yield from range(3)
        assert release_source.wait(WAIT_S)
        yield from range(3, 6)

    pipeline = Pipeline(source()).batch(100, max_wait=0.2)
    results = iter(pipeline)
    assert next(results) == [0, 1, 2]  # the source is still blocked: max_wait sent it
    release_source.set()
    assert list(results) == [[3, 4, 5]]
    books_balance(pipeline)


def test_async_stages_run_at_most_workers_coroutines_at_once():
    counter = pt.Concurrency()
    pipeline = Pipeline(range(200)).map(counter.sleepy, workers=20).map(pt.async_square)
    assert list(pipeline) == [x * x for x in range(200)]
    assert counter.peak == 20
    report = books_balance(pipeline)
    assert report.stages[0].backend == "async"


def test_a_timeout_in_an_async_stage_cancels_the_coroutine_and_fails_the_item():
    counter = pt.Concurrency()
    sleepy = functools.partial(counter.sleepy, seconds=30)

    async def hang_on_two(x):
        if x == 2:
            return await sleepy(x)
        return x

    pipeline = Pipeline(range(6)).map(hang_on_two, backend="async", timeout=0.3, on_error="skip")
    assert list(pipeline) == [0, 1, 3, 4, 5]
    report = books_balance(pipeline)
    assert report.failed == 1
    assert isinstance(report.failures[0].error, conveyor.TaskTimeoutError)
    assert counter.cancelled == 1


# --- errors ------------------------------------------------------------------------------


def test_an_error_in_a_late_stage_stops_earlier_stages_blocked_on_full_bounds():
    # Stage 1 is fast and stage 2 slow with a bound of 2, so stage 1 is blocked on a full
    # bound when stage 3 fails: the pypeln hang. Everything must stop, and the error
    # reach the caller, with nothing left running (conftest checks).
    pipeline = (
        Pipeline(range(10**7))
        .map(abs, backend="process", workers=2)
        .map(pt.slow_identity, backend="thread", workers=1, maxsize=2)
        .map(pt.fail_on_5, backend="thread", workers=1)
    )
    with pytest.raises(ValueError, match="five is not allowed") as caught:
        list(pipeline)
    notes = "\n".join(caught.value.__notes__)
    assert "stage 3:map(fail_on_5) failed on item 5 of its input: 5" in notes
    report = books_balance(pipeline)
    assert report.outcome == "failed"
    assert report.failed == 1
    assert report.cancelled > 0
    assert report.admitted < 10**7  # the source stopped being read


def test_the_error_names_the_stage_and_item_and_keeps_the_workers_traceback():
    pipeline = (
        Pipeline(["a", "b", "c"])
        .map(str.upper, backend="thread")
        .map(pt.always_fail, backend="process", workers=1)
    )
    with pytest.raises(KeyError) as caught:
        pipeline.run()
    notes = caught.value.__notes__
    assert any("stage 2:map(always_fail) failed on item 0 of its input: 'A'" in n for n in notes)
    assert isinstance(caught.value.__cause__, conveyor.RemoteTraceback)
    assert "always_fail" in str(caught.value.__cause__)
    books_balance(pipeline)


def test_errors_after_the_first_are_attached_to_it_not_lost():
    # One item becomes 8, which reach the failing stage together, in one chunk: all 8 fail.
    pipeline = (
        Pipeline([8])
        .flat_map(range, backend="thread")
        .map(pt.always_fail, backend="thread", workers=1, chunksize=8)
    )
    with pytest.raises(KeyError) as caught:
        pipeline.run()
    notes = "\n".join(caught.value.__notes__)
    assert "later errors (7)" in notes
    report = books_balance(pipeline)
    assert report.stages[1].failed == 8


def test_an_exception_in_the_source_stops_the_pipeline_and_says_so():
    def source():
        yield from range(10)
        raise OSError("the disk went away")

    pipeline = Pipeline(source()).map(pt.slow_identity, backend="thread", workers=2)
    with pytest.raises(OSError, match="the disk went away") as caught:
        list(pipeline)
    assert "the source raised after 10 items" in "\n".join(caught.value.__notes__)
    books_balance(pipeline)


def test_on_error_skip_counts_and_keeps_the_failures_and_the_rest_goes_on():
    pipeline = Pipeline(range(100)).map(
        pt.fail_on_multiples_of_7, backend="process", on_error="skip"
    )
    got = list(pipeline)
    assert got == [x for x in range(100) if x % 7]
    report = books_balance(pipeline)
    assert report.failed == 15
    assert sorted(f.item for f in report.failures) == list(range(0, 100, 7))
    assert all(isinstance(f.error, ValueError) for f in report.failures)
    assert report.admitted == report.emitted + report.failed


def test_on_error_callable_is_given_every_failure():
    failures = []
    pipeline = Pipeline(range(30)).map(
        pt.fail_on_multiples_of_7, backend="thread", on_error=failures.append
    )
    assert list(pipeline) == [x for x in range(30) if x % 7]
    assert sorted(f.item for f in failures) == [0, 7, 14, 21, 28]
    assert all(f.stage == "1:map(fail_on_multiples_of_7)" for f in failures)
    books_balance(pipeline)


def test_an_on_error_handler_that_raises_fails_the_run():
    def handler(failure):
        raise RuntimeError("the dead-letter store is down")

    pipeline = Pipeline(range(30)).map(pt.fail_on_5, backend="thread", on_error=handler)
    with pytest.raises(RuntimeError, match="dead-letter store is down"):
        pipeline.run()
    books_balance(pipeline)


def test_an_unpicklable_item_fails_that_item_only():
    pipeline = Pipeline([1, threading.Lock(), 3]).map(
        pt.pid_of, backend="process", workers=1, on_error="skip"
    )
    assert len(list(pipeline)) == 2
    report = books_balance(pipeline)
    assert report.failed == 1
    error = report.failures[0].error
    assert isinstance(error, TypeError) and "pickle" in str(error)


# --- faults ------------------------------------------------------------------------------


def test_a_stage_worker_sigkilled_mid_item_is_retried_and_nothing_is_lost(tmp_path):
    crash = functools.partial(pt.crash_item_first_time, marker_path=str(tmp_path / "m"), bad=9)
    pipeline = (
        Pipeline(range(20))
        .map(pt.square, backend="thread")
        .map(crash, backend="process", workers=2, chunksize=1)
    )
    assert list(pipeline) == [x * x for x in range(20)]
    assert (tmp_path / "m").exists()  # it did crash once
    books_balance(pipeline)


def test_a_stage_worker_that_always_dies_on_an_item_fails_that_item():
    crash = functools.partial(pt.always_crash_on, bad=4)
    pipeline = Pipeline(range(10)).map(
        crash, backend="process", workers=2, retries=1, on_error="skip"
    )
    assert list(pipeline) == [x for x in range(10) if x != 4]
    report = books_balance(pipeline)
    assert isinstance(report.failures[0].error, conveyor.WorkerCrashedError)


def test_a_stage_timeout_fails_the_overdue_item_and_replaces_its_worker():
    slow = functools.partial(pt.sleep_long_on, bad=3, seconds=30)
    pipeline = (
        Pipeline(range(8))
        .map(abs, backend="thread")
        .map(slow, backend="process", workers=2, timeout=0.5, on_error="skip")
    )
    assert list(pipeline) == [0, 1, 2, 4, 5, 6, 7]
    report = books_balance(pipeline)
    assert isinstance(report.failures[0].error, conveyor.TaskTimeoutError)


def test_a_consumer_that_breaks_after_ten_items_cancels_the_pipeline():
    pipeline = (
        Pipeline(itertools.count())
        .map(pt.square, backend="process", workers=2)
        .map(pt.slow_identity, backend="thread", workers=2)
    )
    results = iter(pipeline)
    got = [next(results) for _ in range(10)]
    assert got == [x * x for x in range(10)]
    del results
    gc.collect()  # the iterator's finalizer closes it: the run is cancelled
    report = books_balance(pipeline)
    assert report.outcome == "cancelled"
    assert report.emitted == 10
    assert report.cancelled > 0


def test_leaving_a_with_block_early_cancels_the_run():
    pipeline = Pipeline(range(100_000)).map(pt.slow_identity, backend="thread", workers=2)
    with pipeline.open() as results:
        assert next(results) == 0
    report = books_balance(pipeline)
    assert report.outcome == "cancelled"
    assert report.admitted < 100_000


_CTRL_C_PROGRAM = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import conveyor, pipeline_tasks as pt

    if __name__ == "__main__":
        pipeline = (
            conveyor.Pipeline(range(10**9))
            .map(pt.square, backend="process", workers=2)
            .map(pt.slow_identity, backend="thread", workers=2)
        )
        for i, _ in enumerate(pipeline):
            if i == 5:
                print("running", flush=True)
    """
)


def test_ctrl_c_stops_the_whole_pipeline_with_one_traceback_and_no_orphans():
    program = _CTRL_C_PROGRAM.format(tests=TESTS_DIR)
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "running"
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
        assert children  # its stage workers
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert err.count("Traceback") == 1 and "KeyboardInterrupt" in err
    for child in children:
        wait_until(
            lambda c=child: not c.is_running() or c.status() == "zombie", "stage worker exit"
        )


# --- bounds, statistics, one shot ----------------------------------------------------------


@pytest.mark.slow
def test_memory_stays_bounded_whatever_the_input_length():
    import tracemalloc

    def peak_for(n: int) -> int:
        pipeline = (
            Pipeline(bytes(100) for _ in range(n))
            .map(len, backend="thread", workers=2, chunksize=256, maxsize=512)
            .filter(bool, backend="thread", workers=2, chunksize=256, maxsize=512)
        )
        tracemalloc.start()
        try:
            count = sum(1 for _ in pipeline)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert count == n
        books_balance(pipeline)
        return peak

    small, large = peak_for(1_000), peak_for(1_000_000)
    # A thousand times the items (150 MB of them, were they all kept) and under 1 MB
    # more: the bound is ~5,000 items of ~150 bytes, plus the lists that hold them.
    assert large - small < 1_000_000 and large < 3_000_000, (small, large)


def test_explain_prints_the_bound_on_items_alive():
    text = (
        Pipeline(range(10))
        .map(pt.square, backend="thread", workers=2, chunksize=4, maxsize=10)
        .batch(5)
        .explain()
    )
    # map: 10 waiting + 4 chunks x 2 workers x 4 = 32 in flight; batch: 5 + 10
    assert "at most 57 items alive" in text
    assert "1:map(square)" in text and "2:batch(5)" in text


def test_head_of_line_blocking_shows_in_the_statistics_and_unordered_removes_it():
    def run(ordered: bool) -> conveyor.StageStats:
        pipeline = Pipeline(range(40)).map(
            pt.slow_first, backend="thread", workers=4, chunksize=1, ordered=ordered
        )
        got = list(pipeline)
        assert sorted(got) == list(range(40))
        return books_balance(pipeline).stages[0]

    ordered = run(True)
    unordered = run(False)
    assert ordered.head_of_line_peak > 10 and ordered.head_of_line_s > 1.0
    assert unordered.head_of_line_peak == 0 and unordered.head_of_line_s == 0.0


def test_a_stage_waiting_on_a_full_bound_shows_as_blocked():
    pipeline = (
        Pipeline(range(40))
        .map(pt.square, backend="thread", workers=2)
        .map(pt.slow_identity, backend="thread", workers=1, maxsize=1, chunksize=1)
    )
    pipeline.run()
    report = books_balance(pipeline)
    assert report.stages[0].blocked_s > 0.5


def test_a_pipeline_runs_once():
    pipeline = Pipeline([1, 2, 3]).map(pt.square, backend="thread")
    assert list(pipeline) == [1, 4, 9]
    with pytest.raises(conveyor.PipelineSpentError):
        list(pipeline)
    source = iter(range(3))
    first = Pipeline(source).map(pt.square, backend="thread")
    first.run()
    with pytest.raises(conveyor.PipelineSpentError, match="iterator"):
        first.map(pt.square, backend="thread").run()


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda p: p.map(pt.square, backend="gpu"), ValueError, "backend must be one of"),
        (lambda p: p.map(pt.square, workers=0), ValueError, "workers must be a positive int"),
        (lambda p: p.map(pt.async_square, backend="process"), TypeError, "coroutine function"),
        (lambda p: p.map(pt.square, backend="async"), TypeError, "takes a coroutine function"),
        (lambda p: p.map(pt.square, on_error="ignore"), ValueError, "on_error must be"),
        (lambda p: p.map(pt.square, timeout=-1), ValueError, "timeout must be a positive"),
        (lambda p: p.map(42), TypeError, "must be callable"),
        (lambda p: p.batch(0), ValueError, "size must be a positive int"),
        (lambda p: p.map(pt.square, limiter=3), TypeError, "limiter must be"),
    ],
)
def test_bad_stage_options_are_refused_where_they_are_written(build, error, message):
    with pytest.raises(error, match=message):
        build(Pipeline(range(3)))


def test_a_source_that_is_not_iterable_is_refused():
    with pytest.raises(TypeError, match="must be iterable"):
        Pipeline(42)


def test_progress_shows_one_line_per_stage_with_its_count(capsys):
    pipeline = (
        Pipeline(range(50), progress=True)
        .map(pt.square, backend="thread")
        .filter(pt.is_even, backend="thread")
    )
    pipeline.run()
    drawn = capsys.readouterr().err.replace("\r", "\n")
    assert "1:map(square): 50item" in drawn
    assert "2:filter(is_even): 50item" in drawn  # settled: 25 emitted, 25 filtered
    assert "queue 0/" in drawn
    books_balance(pipeline)


def test_every_stage_on_a_pool_publishes_its_task_events(tmp_path):
    events: list[conveyor.StageEvent] = []
    lock = threading.Lock()

    def keep(event):
        with lock:
            events.append(event)

    crash = functools.partial(pt.crash_item_first_time, marker_path=str(tmp_path / "m"), bad=4)
    pipeline = (
        Pipeline(range(30), subscriber=keep)
        .map(pt.square, backend="thread")
        .map(crash, backend="process", workers=2, chunksize=1)
    )
    assert list(pipeline) == [x * x for x in range(30)]
    books_balance(pipeline)

    def finished(stage: str) -> list[int]:
        return sorted(
            task
            for e in events
            if e.stage == stage
            and isinstance(e.event, conveyor.TaskEvent)
            and e.event.kind is conveyor.EventKind.FINISHED
            for task in e.event.tasks
        )

    assert finished("1:map(square)") == list(range(30))
    assert finished("2:map(crash_item_first_time)") == list(range(30))
    retried = [e for e in events if getattr(e.event, "kind", None) is conveyor.EventKind.RETRIED]
    assert retried and all(e.stage == "2:map(crash_item_first_time)" for e in retried)


def test_coroutines_run_concurrently_inside_process_workers():
    pipeline = Pipeline(range(60)).map(pt.async_peak, backend="process", workers=2, concurrency=10)
    got = list(pipeline)
    assert [x for x, _, _ in got] == list(range(60))  # in order
    peaks = [peak for _, _, peak in got]
    assert max(peaks) == 10  # ten at once in a worker, never more
    assert os.getpid() not in {pid for _, pid, _ in got}
    report = books_balance(pipeline)
    assert report.stages[0].backend == "process"


def test_an_item_failing_or_overdue_inside_a_worker_loop_costs_that_item_only():
    async_hang = functools.partial(pt.async_hang_on, bad=5)
    pipeline = (
        Pipeline(range(10))
        .map(pt.async_fail_on_3, backend="process", workers=1, concurrency=4, on_error="skip")
        .map(async_hang, backend="process", workers=1, concurrency=4, timeout=0.5, on_error="skip")
    )
    assert list(pipeline) == [0, 1, 2, 4, 6, 7, 8, 9]
    report = books_balance(pipeline)
    errors = {f.stage: f.error for f in report.failures}
    first = errors["1:map(async_fail_on_3)"]
    assert isinstance(first, ValueError) and isinstance(first.__cause__, conveyor.RemoteTraceback)
    assert isinstance(errors["2:map(async_hang_on)"], conveyor.TaskTimeoutError)


def test_concurrency_is_refused_where_it_cannot_apply():
    with pytest.raises(TypeError, match="for coroutine functions"):
        Pipeline(range(3)).map(pt.square, concurrency=4)
    with pytest.raises(ValueError, match="its workers="):
        Pipeline(range(3)).map(pt.async_square, backend="async", concurrency=4)
    with pytest.raises(TypeError, match="concurrency=N"):
        Pipeline(range(3)).map(pt.async_square, backend="process")


def test_a_rate_limit_holds_in_an_async_stage_with_many_coroutines():
    starts = pt.Starts()
    limiter = conveyor.RateLimiter("20/s", burst=1)  # one start every 50 ms
    pipeline = Pipeline(range(15)).map(starts.note, workers=64, limiter=limiter)
    assert list(pipeline) == list(range(15))
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts.times))]
    assert min(gaps) > 0.04, gaps  # never two starts closer than the rate allows
    books_balance(pipeline)


def test_a_capacity_limiter_bounds_a_thread_stage_whatever_its_workers():
    holds = pt.Starts()
    limiter = conveyor.CapacityLimiter(2)
    pipeline = Pipeline(range(30)).map(
        holds.hold, backend="thread", workers=6, chunksize=1, limiter=limiter
    )
    assert list(pipeline) == list(range(30))
    assert holds.peak == 2
    report = books_balance(pipeline)
    assert report.stages[0].limiter_waits > 0


def test_on_error_emit_sends_failures_downstream_in_place_to_a_sink_stage():
    seen = []

    def sink(value):
        seen.append(value)

    pipeline = (
        Pipeline(range(10))
        .map(pt.fail_on_multiples_of_7, backend="process", workers=2, on_error="emit")
        .each(sink, backend="thread", workers=1)
    )
    pipeline.run()
    kinds = ["failure" if isinstance(v, conveyor.Failure) else v for v in seen]
    assert kinds == ["failure", 1, 2, 3, 4, 5, 6, "failure", 8, 9]  # in place, in order
    failures = [v for v in seen if isinstance(v, conveyor.Failure)]
    assert [f.item for f in failures] == [0, 7]
    assert all(isinstance(f.error, ValueError) for f in failures)
    report = books_balance(pipeline)
    assert report.stages[0].failed == 2 and report.stages[0].outputs == 10
    assert report.stages[1].received == 10
