"""conveyor.Queue: every item exactly once, end of stream, shutdown, and real faults.

Each test that involves other processes uses real ones (every start method where it
matters) and real SIGKILLs; no wait is unbounded.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time

import numpy as np
import pytest

import conveyor
import queue_tasks
from conftest import WAIT_S, process_gone, refused_to_a_stranger, wait_until
from conveyor._queues._wire import INLINE_MAX_BYTES

METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture(params=METHODS)
def ctx(request):
    return multiprocessing.get_context(request.param)


def _join_all(processes, timeout=WAIT_S):
    for p in processes:
        p.join(timeout)
        assert p.exitcode is not None, f"{p.name} did not exit"


def _start_producers(ctx, q, count_each, how_many, delay_s=0.0, then="close"):
    """Start producer processes and wait until each holds the queue.

    A process counts as a producer from the moment it holds the queue: a consumer that
    began before a slow one had even started could see every other producer finish,
    and the stream end (docs/queues.md, "When the stream ends").
    """
    started = ctx.SimpleQueue()  # the stdlib's: this queue's own stream must not end
    producers = [
        ctx.Process(
            target=queue_tasks.announce_then_produce,
            args=(q, k * count_each, count_each, started, delay_s, then),
        )
        for k in range(how_many)
    ]
    for p in producers:
        p.start()
    for _ in producers:
        wait_until(lambda: not started.empty(), "a producer to start")
        started.get()
    return producers


# --- one process ----------------------------------------------------------------------


def test_items_come_out_in_the_order_they_went_in_and_qsize_counts_them():
    q = conveyor.Queue()
    for i in range(10):
        q.put(i)
    assert q.qsize() == 10 and not q.empty()
    assert [q.get() for _ in range(10)] == list(range(10))
    assert q.empty()
    with pytest.raises(queue.Empty):
        q.get_nowait()


def test_a_hundred_thousand_puts_without_a_reader_neither_block_nor_reorder():
    # Far more than the kernel holds: the rest waits in this process's backlog.
    q = conveyor.Queue()
    for i in range(100_000):
        q.put(i)
    assert q.qsize() == 100_000
    assert [q.get(timeout=WAIT_S) for _ in range(100_000)] == list(range(100_000))
    # The feeder thread counts each item just after sending it: the last count may
    # trail the consumer's get by a moment.
    wait_until(lambda: q.statistics().waiting_to_send == 0, "the backlog's books settled")


def test_put_many_and_get_many_move_batches_in_order():
    q = conveyor.Queue()
    q.put_many(range(1000))
    got = []
    while len(got) < 1000:
        batch = q.get_many(300, timeout=WAIT_S)
        assert 1 <= len(batch) <= 300
        got += batch
    assert got == list(range(1000))
    with pytest.raises(queue.Empty):
        q.get_many(10, timeout=0.05)


def test_get_many_returns_the_batch_before_an_item_that_fails_to_unpickle_then_raises_it():
    q = conveyor.Queue()
    q.put_many([1, 2, queue_tasks.FailsToUnpickle(), 4])
    assert q.get_many(10, timeout=WAIT_S) == [1, 2]
    with pytest.raises(RuntimeError, match="cannot be rebuilt"):
        q.get(timeout=WAIT_S)
    assert q.get(timeout=WAIT_S) == 4


def test_put_many_with_an_unpicklable_item_puts_none_of_the_batch():
    q = conveyor.Queue()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put_many([1, 2, lambda: None, 4])
    assert q.qsize() == 0


def test_put_many_into_a_bounded_queue_stops_at_full_with_the_items_before_it_in():
    q = conveyor.Queue(maxsize=3)
    with pytest.raises(queue.Full):
        q.put_many(range(5), timeout=0.2)
    assert [q.get_nowait() for _ in range(3)] == [0, 1, 2]


def test_an_unpicklable_item_fails_the_put_that_made_it_and_the_queue_goes_on():
    q = conveyor.Queue()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        q.put(lambda: None)
    q.put("fine")
    assert q.get(timeout=WAIT_S) == "fine"
    assert q.statistics().put == 1


def test_get_with_a_timeout_raises_empty_when_nothing_comes():
    q = conveyor.Queue()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert time.monotonic() - started >= 0.19


def test_a_closed_queue_refuses_put_and_get_in_this_process():
    q = conveyor.Queue()
    q.put(1)
    q.close()
    with pytest.raises(ValueError, match="is closed"):
        q.put(2)
    with pytest.raises(ValueError, match="is closed"):
        q.get()


def test_a_dropped_queue_lets_go_of_its_descriptors():
    def open_fds():
        return len(os.listdir("/proc/self/fd"))

    conveyor.Queue().put(0)  # first use: whatever is made once per process
    gc.collect()
    before = open_fds()
    for _ in range(50):
        q = conveyor.Queue(maxsize=3)
        q.put("x")
        assert q.get() == "x"
        del q
    gc.collect()
    assert open_fds() <= before


def test_threads_share_a_queue_and_each_item_is_taken_once():
    q = conveyor.Queue()
    taken: list[int] = []
    lock = threading.Lock()

    def consume():
        while True:
            try:
                item = q.get(timeout=2)
            except queue.Empty:
                return
            with lock:
                taken.append(item)

    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for t in consumers:
        t.start()
    producers = [
        threading.Thread(target=queue_tasks.produce, args=(q, k * 5000, 5000)) for k in range(4)
    ]
    for t in producers:
        t.start()
    for t in producers + consumers:
        t.join(WAIT_S)
    assert sorted(taken) == list(range(20_000))


def test_large_numpy_arrays_cross_intact():
    q = conveyor.Queue()
    arrays = [np.arange(2_000_000, dtype=np.float64) * k for k in range(3)]
    for a in arrays:
        q.put(a)
    for a in arrays:
        assert np.array_equal(q.get(timeout=WAIT_S), a)


def test_a_pickle_too_large_for_one_message_still_arrives():
    q = conveyor.Queue()
    big = list(range(300_000))  # a pickle of ~1.5 MB, not a buffer
    q.put(big)
    assert q.get(timeout=WAIT_S) == big


@pytest.mark.parametrize("delta", [-64, -1, 0, 1, 64])
def test_items_either_side_of_the_largest_inline_message_arrive(delta):
    # Items just under 1 MiB once went inline into a 256 KiB receive buffer and were lost
    # with "truncated"; every size on either side of the line must arrive intact.
    q = conveyor.Queue()
    overhead = len(pickle.dumps(bytes(INLINE_MAX_BYTES), protocol=5)) - INLINE_MAX_BYTES
    for size in (INLINE_MAX_BYTES + delta - overhead, 600_000, 1 << 20):
        item = os.urandom(size)
        q.put(item)
        assert q.get(timeout=WAIT_S) == item


# --- processes --------------------------------------------------------------------------


def test_every_item_is_taken_exactly_once_by_many_consumer_processes(ctx):
    q, out = conveyor.Queue(), ctx.Queue()
    consumers = [ctx.Process(target=queue_tasks.drain, args=(q, out)) for _ in range(3)]
    for p in consumers:
        p.start()
    producers = _start_producers(ctx, q, 10_000, 3)
    taken = [item for _ in consumers for item in out.get(timeout=WAIT_S)]
    _join_all(producers + consumers)
    assert sorted(taken) == list(range(30_000))
    stats = q.statistics()
    assert (stats.put, stats.got, stats.depth) == (30_000, 30_000, 0)


def test_statistics_count_the_producers_and_consumers_open_and_forget_the_dead(ctx):
    q = conveyor.Queue()
    started = ctx.SimpleQueue()
    holders = [ctx.Process(target=queue_tasks.put_then_hold, args=(q, started)) for _ in range(2)]
    for p in holders:
        p.start()
    for _ in holders:
        wait_until(lambda: not started.empty(), "a producer to put")
        started.get()
    stats = q.statistics()
    assert (stats.producers, stats.consumers) == (2, 0)
    q.get(timeout=WAIT_S)
    assert (q.statistics().producers, q.statistics().consumers) == (2, 1)
    os.kill(holders[0].pid, signal.SIGKILL)
    holders[0].join(WAIT_S)
    assert q.statistics().producers == 1
    q.put("mine")
    assert q.statistics().producers == 2  # this process, now
    q.close()
    holders[1].kill()
    holders[1].join(WAIT_S)
    assert (q.statistics().producers, q.statistics().consumers) == (0, 1)


def test_a_consumer_handed_the_queue_again_is_a_consumer_again_at_its_next_get():
    # Its fast get must not skip the step that lets go of the producer end a handover
    # opens, or it would hold the stream open for every other consumer.
    q = conveyor.Queue()
    producer = multiprocessing.get_context("fork").Process(
        target=queue_tasks.produce_and_close, args=(q, 0, 2)
    )
    producer.start()
    assert q.get(timeout=WAIT_S) == 0  # a consumer now, on the fast path
    assert pickle.loads(pickle.dumps(q)) is not None  # handed again (as to a pool task)
    assert q._handles.writer is not None  # counted as a producer until it shows otherwise
    wait_until(lambda: q.qsize() == 1, "the second item")
    assert q.get(timeout=WAIT_S) == 1
    assert q._handles.writer is None  # a consumer again: its end let go at this get
    producer.join(WAIT_S)
    with pytest.raises(conveyor.EndOfStream):
        q.get(timeout=5)


def test_a_consumer_reading_at_once_gets_the_items_of_producers_still_starting(ctx):
    # The parent reads as soon as it has started them: a fast producer may finish before
    # a slow one has even unpickled its arguments, and the stream must not end there.
    for _ in range(3):
        q = conveyor.Queue()
        producers = [
            ctx.Process(target=queue_tasks.produce, args=(q, k * 1000, 1000)) for k in range(4)
        ]
        for p in producers:
            p.start()
        assert sorted(q) == list(range(4000))
        _join_all(producers)


def test_consumers_get_end_of_stream_once_producers_close(ctx):
    q = conveyor.Queue()
    producers = [
        ctx.Process(target=queue_tasks.produce_and_close, args=(q, k * 100, 100)) for k in range(2)
    ]
    for p in producers:
        p.start()
    _join_all(producers)
    taken = list(q)  # ends: both producers closed
    assert sorted(taken) == list(range(200))
    with pytest.raises(conveyor.EndOfStream):
        q.get(timeout=WAIT_S)
    with pytest.raises(queue.Empty):  # what code written for multiprocessing catches
        q.get_nowait()


def test_consumers_get_end_of_stream_when_every_producer_is_sigkilled(ctx):
    q = conveyor.Queue()
    producers = _start_producers(ctx, q, 100, 2, then="die")
    taken = list(q)  # no close() anywhere: the deaths end the stream
    _join_all(producers)
    assert all(p.exitcode == -signal.SIGKILL for p in producers)
    assert sorted(taken) == list(range(200))


def test_no_end_of_stream_before_any_producer_existed():
    q = conveyor.Queue()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)


def test_a_process_that_exits_right_after_put_loses_nothing(ctx):
    q = conveyor.Queue()
    p = ctx.Process(target=queue_tasks.put_then_exit_at_once, args=(q, 1000))
    p.start()
    _join_all([p])
    assert list(q) == list(range(1000))


def test_exit_with_unread_items_waits_a_bounded_time_and_counts_what_it_dropped(ctx):
    q = conveyor.Queue()
    # 50,000 items of 1 kB: far more than the kernel holds, and nobody reads.
    p = ctx.Process(target=queue_tasks.put_many_unread_then_exit, args=(q, 50_000, 0.3))
    started = time.monotonic()
    p.start()
    _join_all([p])
    assert time.monotonic() - started < 20
    stats = q.statistics()
    assert stats.stranded > 0
    assert stats.put + stats.stranded == 50_000
    assert q.qsize() == stats.put  # the stranded items are not in the queue


def test_a_queue_passed_to_pool_tasks_ends_when_the_tasks_that_got_it_return():
    q = conveyor.Queue()
    with conveyor.WorkerPool(2) as pool:
        # Six tasks on two workers: four wait in the pool's queue while two run, and the
        # stream must wait for them too, from their submission.
        futures = [pool.submit(queue_tasks.produce, q, k * 1000, 1000) for k in range(6)]
        taken = list(q)  # ends while the pool's workers still run: their tasks are done
        assert sorted(taken) == list(range(6000))
        assert [f.result(timeout=WAIT_S) for f in futures] == [1000] * 6
        more = pool.submit(queue_tasks.produce, q, 6000, 5)  # the same workers, once more
        assert more.result(timeout=WAIT_S) == 5
        assert sorted(q) == list(range(6000, 6005))


def test_a_queue_in_the_items_of_a_starmap_is_waited_for_until_the_map_ends():
    q = conveyor.Queue()
    with conveyor.Pool(2) as pool:
        result = pool.starmap_async(
            queue_tasks.produce, [(q, k * 100, 100) for k in range(8)], chunksize=1
        )
        taken = list(q)
        assert result.get(timeout=WAIT_S) == [100] * 8
    assert sorted(taken) == list(range(800))


def test_a_queue_in_the_items_of_a_lazy_map_is_waited_for_until_the_map_ends():
    q = conveyor.Queue()
    items = ((q, k * 100, 100) for k in range(8))  # a generator: read on the feeder thread
    with conveyor.Pool(2) as pool:
        results = pool.imap_unordered(queue_tasks.produce_star, items, chunksize=1)
        taken = list(q)  # without the hold, ends once the first tasks are done
        assert sorted(results) == [100] * 8
    assert sorted(taken) == list(range(800))


def test_a_process_without_the_key_cannot_join_and_the_others_still_can(ctx):
    q = conveyor.Queue()
    pickled = pickle.dumps(q)  # its descriptors wait in this process's resource sharer
    said = refused_to_a_stranger(pickled)  # a fresh interpreter: another authkey
    assert said.startswith("refused:") and "authkey" in said, said
    child = ctx.Process(target=queue_tasks.unpickle_and_put, args=(pickled, "joined"))
    child.start()  # a child holds the key: it is served the very same queue
    assert q.get(timeout=WAIT_S) == "joined"
    child.join(WAIT_S)
    assert child.exitcode == 0


# --- bounded queues -----------------------------------------------------------------------


def test_a_full_queue_refuses_put_nowait_and_times_out_a_blocking_put():
    q = conveyor.Queue(maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert q.qsize() == 2


def test_a_put_blocked_on_a_full_queue_wakes_when_another_process_takes_an_item(ctx):
    q, out = conveyor.Queue(maxsize=1), conveyor.Queue()
    q.put("first")
    putter = ctx.Process(target=queue_tasks.put_one, args=(q, out, "second"))
    putter.start()
    with pytest.raises(queue.Empty):
        out.get(timeout=0.3)  # it is blocked: the queue is full
    assert q.get(timeout=WAIT_S) == "first"
    assert out.get(timeout=WAIT_S) == ("put", "second")
    assert q.get(timeout=WAIT_S) == "second"
    _join_all([putter])


def test_a_bounded_queue_never_holds_more_than_maxsize(ctx):
    q = conveyor.Queue(maxsize=5)
    producers = _start_producers(ctx, q, 500, 3)
    taken, peak = [], 0
    for item in q:
        peak = max(peak, q.qsize() + 1)
        taken.append(item)
    _join_all(producers)
    assert sorted(taken) == list(range(1500))
    # +1: a put may land between our get and our look; +1: qsize() sums the processes'
    # rows while they write them, so one count can be seen a moment early. Unbounded,
    # the peak would be in the hundreds.
    assert peak <= 5 + 2


def test_a_producer_that_has_not_put_yet_is_waited_for(ctx):
    # One producer puts, closes and exits while the other, started, has not put yet.
    q = conveyor.Queue()
    quick = ctx.Process(target=queue_tasks.produce_and_close, args=(q, 0, 10))
    quick.start()
    _join_all([quick])
    slow = ctx.Process(target=queue_tasks.produce_after, args=(q, 0, 10, 0.5))  # 0-9, later
    slow.start()
    taken = list(q)
    _join_all([slow])
    assert sorted(taken) == sorted(list(range(10)) * 2)


def test_a_process_handed_the_queue_that_only_reads_does_not_hold_the_stream_open(ctx):
    q, out = conveyor.Queue(), conveyor.Queue()
    reader = ctx.Process(target=queue_tasks.drain, args=(q, out))
    reader.start()
    q.put(1)
    q.put(2)
    q.close()  # the only producer is done; the reader's own first get made it a consumer
    assert out.get(timeout=WAIT_S) == [1, 2]
    _join_all([reader])


# --- shutdown --------------------------------------------------------------------------------


def test_shutdown_wakes_eight_processes_blocked_in_get():
    ctx = multiprocessing.get_context("forkserver")
    q, out = conveyor.Queue(), ctx.Queue()
    getters = [ctx.Process(target=queue_tasks.get_one, args=(q, out)) for _ in range(8)]
    for p in getters:
        p.start()
    time.sleep(0.3)  # let them block (a late one meets the shutdown: same outcome)
    q.shutdown()
    outcomes = [out.get(timeout=WAIT_S) for _ in getters]
    _join_all(getters)
    assert outcomes == [("error", "QueueShutDown")] * 8


def test_after_shutdown_put_raises_and_get_drains_then_raises():
    q = conveyor.Queue()
    q.put(1)
    q.put(2)
    q.shutdown()
    with pytest.raises(conveyor.QueueShutDown):
        q.put(3)
    assert [q.get(), q.get()] == [1, 2]
    with pytest.raises(conveyor.QueueShutDown):
        q.get(timeout=WAIT_S)


def test_immediate_shutdown_drops_the_items_and_counts_them():
    q = conveyor.Queue()
    for i in range(5):
        q.put(i)
    q.shutdown(immediate=True)
    with pytest.raises(conveyor.QueueShutDown):
        q.get(timeout=WAIT_S)
    assert q.statistics().discarded == 5


def test_shutdown_wakes_a_put_blocked_on_a_full_queue(ctx):
    q, out = conveyor.Queue(maxsize=1), conveyor.Queue()
    q.put("first")
    putter = ctx.Process(target=queue_tasks.put_one, args=(q, out, "second"))
    putter.start()
    time.sleep(0.3)
    q.shutdown()
    assert out.get(timeout=WAIT_S) == ("error", "QueueShutDown")
    _join_all([putter])


# --- faults ---------------------------------------------------------------------------------


def test_a_producer_sigkilled_inside_a_large_put_leaves_the_queue_usable(ctx):
    q, ready = conveyor.Queue(), conveyor.Queue()
    p = ctx.Process(target=queue_tasks.put_big_forever, args=(q, ready, 3_000_000))
    p.start()
    ready.get(timeout=WAIT_S)
    wait_until(lambda: q.qsize() >= 2, "a few large items")
    os.kill(p.pid, signal.SIGKILL)
    _join_all([p])
    # Every message in the queue is whole: each is the 3 MB the producer put.
    got = []
    while True:
        try:
            got.append(q.get(timeout=WAIT_S))
        except conveyor.EndOfStream:
            break
    assert got and all(item == b"x" * 3_000_000 for item in got)
    q.put("still usable")  # this process is now a producer: no end of stream
    assert q.get(timeout=WAIT_S) == "still usable"


def test_a_consumer_sigkilled_while_blocked_in_get_costs_nothing(ctx):
    q, ready = conveyor.Queue(), conveyor.Queue()
    p = ctx.Process(target=queue_tasks.announce_then_block_in_get, args=(q, ready))
    p.start()
    pid = ready.get(timeout=WAIT_S)
    time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    _join_all([p])
    wait_until(lambda: process_gone(pid), "the consumer gone")
    q.put("after")
    assert q.get(timeout=WAIT_S) == "after"
    stats = q.statistics()
    assert (stats.put, stats.got, stats.interrupted) == (1, 1, 0)


@pytest.mark.parametrize("then", ["die", "hang_on"])
def test_a_consumer_that_stops_reading_leaves_producers_a_way_out_and_a_count(ctx, then):
    # The drop-in queue does not refuse puts when its consumers go (another may come,
    # as with the stdlib's); a full queue makes put time out, and the books say why.
    q = conveyor.Queue(maxsize=10)
    taken = ctx.SimpleQueue()
    reader = ctx.Process(target=queue_tasks.take_some_then_stop, args=(q, 5, taken, then))
    reader.start()
    try:
        sent = 0
        while True:
            try:
                q.put(sent, timeout=0.5)
            except queue.Full:
                break
            sent += 1
        wait_until(lambda: not taken.empty(), "the reader's report")
        assert taken.get() == list(range(5))
        assert sent == 15  # five taken, ten waiting: nothing lost, nothing hidden
        if then == "die":
            reader.join(WAIT_S)
        stats = q.statistics()
        assert (stats.depth, stats.got, stats.interrupted) == (10, 5, 0)
        assert stats.consumers == (0 if then == "die" else 1)
        assert [q.get(timeout=WAIT_S) for _ in range(10)] == list(range(5, 15))
    finally:
        reader.kill()
        reader.join(WAIT_S)


# --- JoinableQueue ------------------------------------------------------------------------


def test_task_done_more_often_than_items_were_put_is_an_error():
    q = conveyor.JoinableQueue()
    q.put(1)
    q.get()
    q.task_done()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


def test_join_returns_once_consumer_processes_marked_every_item_done(ctx):
    q = conveyor.JoinableQueue()
    for i in range(200):
        q.put(i)
    assert q.join(timeout=0.1) is False  # nobody works on them yet
    workers = [ctx.Process(target=queue_tasks.work_and_mark_done, args=(q,)) for _ in range(2)]
    for w in workers:
        w.start()
    assert q.join(timeout=WAIT_S) is True
    assert q.qsize() == 0
    q.close()  # the only producer: the workers' iteration ends
    _join_all(workers)


def test_join_does_not_wait_for_an_item_whose_taker_was_killed(ctx):
    q, ready = conveyor.JoinableQueue(), ctx.SimpleQueue()
    q.put("doomed")
    taker = ctx.Process(target=queue_tasks.take_one_then_die, args=(q, ready))
    taker.start()
    _join_all([taker])
    assert q.join(timeout=WAIT_S) is True  # the stdlib's would wait forever
    assert q.statistics().abandoned == 1
