"""conveyor.Pipe: each end belongs to the process that last used it or was handed it, and
the other side learns when that process closes its end or dies, whatever copies remain.

Every process test leaves the parent holding a copy of the child's end, the copy that
makes the stdlib's pipe wait forever.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

import conveyor
import pipe_tasks
from conftest import WAIT_S, process_gone, refused_to_a_stranger, wait_until
from conveyor._queues._owners import HELD, HolderWatch, pack
from conveyor._queues._pid import start_ticks
from conveyor._queues._wire import INLINE_MAX_BYTES

METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture(params=METHODS)
def ctx(request):
    return multiprocessing.get_context(request.param)


def _expect_eof(conn, within=WAIT_S):
    """``conn.recv()`` raises EOFError, and does so without waiting out a timeout."""
    assert conn.poll(within), "the end of the stream was not reported"
    with pytest.raises(EOFError):
        conn.recv()


def _start_holder(ctx, conn):
    """A child handed ``conn`` that holds it without using it; returns once it runs."""
    started = ctx.SimpleQueue()
    child = ctx.Process(target=pipe_tasks.announce_then_sleep, args=(conn, started))
    child.start()
    wait_until(lambda: not started.empty(), "the child to start")
    started.get()
    return child


# --- one process ----------------------------------------------------------------------


def test_objects_and_bytes_arrive_whole_in_order_and_of_every_size():
    a, b = conveyor.Pipe()
    big_array = np.arange(2_000_000, dtype=np.float64)
    objects = [1, "two", None, {"k": [3.0]}, big_array, list(range(300_000))]
    for obj in objects:
        a.send(obj)
    for obj in objects:
        got = b.recv()
        if isinstance(obj, np.ndarray):
            assert np.array_equal(got, obj)
        else:
            assert got == obj
    for size in (0, 1, INLINE_MAX_BYTES - 1, INLINE_MAX_BYTES, INLINE_MAX_BYTES + 1, 16 << 20):
        payload = os.urandom(size)
        b.send_bytes(payload)
        assert a.recv_bytes() == payload
    a.close()
    b.close()


def test_bytes_sent_with_send_bytes_unpickle_with_recv_and_a_pickle_reads_as_bytes():
    # The stdlib's pipes are one stream of messages whichever call wrote them.
    a, b = conveyor.Pipe()
    a.send_bytes(pickle.dumps({"x": 1}))
    assert b.recv() == {"x": 1}
    a.send([1, 2])
    assert pickle.loads(b.recv_bytes()) == [1, 2]
    a.send(np.arange(1 << 18))  # 2 MiB: its buffer goes out of band, and comes back in
    assert np.array_equal(pickle.loads(b.recv_bytes()), np.arange(1 << 18))


def test_an_unpicklable_object_raises_in_the_sender_and_nothing_is_sent():
    a, b = conveyor.Pipe()
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        a.send(lambda: None)
    a.send("after")
    assert b.recv() == "after"
    assert not b.poll()


def test_a_message_longer_than_maxlength_raises_and_closes_the_end():
    a, b = conveyor.Pipe()
    a.send_bytes(b"x" * 100)
    with pytest.raises(OSError, match="bad message length"):
        b.recv_bytes(maxlength=10)
    assert b.closed


def test_a_one_way_pipe_refuses_the_wrong_direction():
    reader, writer = conveyor.Pipe(duplex=False)
    writer.send(1)
    assert reader.recv() == 1
    with pytest.raises(OSError, match="write-only"):
        writer.recv()
    with pytest.raises(OSError, match="read-only"):
        reader.send(2)


def test_threads_sharing_an_end_each_get_whole_messages_exactly_once():
    a, b = conveyor.Pipe()
    per_sender, senders = 5_000, 4
    taken: list[int] = []
    lock = threading.Lock()

    def send(base):
        for i in range(base, base + per_sender):
            a.send_bytes(i.to_bytes(4, "little") * (1 + i % 300))

    def receive():
        while True:
            data = b.recv_bytes()
            if not data:
                return
            value = int.from_bytes(data[:4], "little")
            assert data == data[:4] * (1 + value % 300)
            with lock:
                taken.append(value)

    receivers = [threading.Thread(target=receive) for _ in range(2)]
    for t in receivers:
        t.start()
    workers = [threading.Thread(target=send, args=(k * per_sender,)) for k in range(senders)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(WAIT_S)
    for _ in receivers:
        a.send_bytes(b"")
    for t in receivers:
        t.join(WAIT_S)
    assert sorted(taken) == list(range(senders * per_sender))


def test_multiprocessing_wait_sees_an_end_with_a_message():
    a, b = conveyor.Pipe()
    assert multiprocessing.connection.wait([b], timeout=0.05) == []
    a.send("ready")
    assert multiprocessing.connection.wait([b], timeout=WAIT_S) == [b]


def test_a_reused_pid_does_not_pass_for_the_holder_that_had_it():
    # The holder is named by pid and start time; a live process with the pid but another
    # start time is someone else, so the holder counts as gone.
    pid = os.getppid()
    start = start_ticks(pid)
    assert start is not None
    watch = HolderWatch()
    watch.follow(pack(pid, HELD, start))
    assert not watch.gone()
    watch.follow(pack(pid, HELD, start + 1))
    assert watch.gone()
    watch.close()


# --- the holder's death and close -----------------------------------------------------


def test_a_child_sigkilled_while_the_parent_holds_a_copy_of_its_end_ends_the_stream(ctx):
    a, b = conveyor.Pipe()
    child = ctx.Process(target=pipe_tasks.send_then, args=(b, 100, "die"))
    child.start()
    assert [a.recv() for _ in range(100)] == list(range(100))  # sent before it died: kept
    _expect_eof(a)
    child.join(WAIT_S)
    assert child.exitcode == -signal.SIGKILL


def test_a_child_that_returns_without_closing_its_end_ends_the_stream(ctx):
    a, b = conveyor.Pipe()
    child = ctx.Process(target=pipe_tasks.send_then, args=(b, 3, "return"))
    child.start()
    assert [a.recv() for _ in range(3)] == [0, 1, 2]
    _expect_eof(a)
    child.join(WAIT_S)


def test_the_holder_closing_its_end_ends_the_stream_while_it_lives_on(ctx):
    a, b = conveyor.Pipe()
    child = ctx.Process(target=pipe_tasks.send_then, args=(b, 2, "close_and_linger"))
    child.start()
    try:
        assert [a.recv(), a.recv()] == [0, 1]
        _expect_eof(a)
        assert child.is_alive()
        with pytest.raises(BrokenPipeError):
            a.send("nobody will read this")
    finally:
        child.kill()
        child.join(WAIT_S)


def test_a_recv_blocked_in_the_parent_wakes_with_eof_when_the_holder_is_killed(ctx):
    a, b = conveyor.Pipe()
    child = _start_holder(ctx, b)
    killer = threading.Timer(0.3, os.kill, (child.pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    with pytest.raises(EOFError, match=f"pid {child.pid}"):
        a.recv()
    assert time.monotonic() - started < WAIT_S
    killer.join()
    child.join(WAIT_S)


def test_a_send_blocked_on_a_full_pipe_wakes_with_broken_pipe_when_the_reader_dies(ctx):
    a, b = conveyor.Pipe()
    child = _start_holder(ctx, b)
    killer = threading.Timer(0.5, os.kill, (child.pid, signal.SIGKILL))
    killer.start()
    chunk = b"x" * (64 << 10)

    def fill():
        for _ in range(100_000):  # far more than the socket holds: a send blocks
            a.send_bytes(chunk)

    with pytest.raises(BrokenPipeError):
        fill()
    killer.join()
    child.join(WAIT_S)


# --- handing an end over --------------------------------------------------------------


def test_an_end_handed_through_a_queue_belongs_to_the_process_that_took_it(ctx):
    a, b = conveyor.Pipe()
    ends = conveyor.Queue()
    child = ctx.Process(target=pipe_tasks.receive_end_and_send, args=(ends, 5))
    child.start()
    ends.put(b)  # the parent's copy of b stays open
    assert [a.recv() for _ in range(5)] == list(range(5))
    _expect_eof(a)
    child.join(WAIT_S)


def test_a_copy_used_again_makes_its_process_the_holder_again(ctx):
    a, b = conveyor.Pipe()
    ends, done = conveyor.Queue(), ctx.SimpleQueue()
    child = ctx.Process(target=pipe_tasks.receive_end_and_return, args=(ends, done))
    child.start()
    ends.put(b)
    wait_until(lambda: not done.empty(), "the child to take the end")
    child.join(WAIT_S)
    assert a.poll(WAIT_S)  # its holder is gone...
    b.send("still here")  # ...until this process uses its copy: it holds the end now
    assert a.recv() == "still here"
    assert not a.poll(0.2)


def test_an_end_given_to_a_pool_task_ends_the_stream_when_the_task_is_done(make_pool, backend):
    if backend == "thread":
        pytest.skip("a thread's task uses this process's own end, which this process holds")
    a, b = conveyor.Pipe()
    with make_pool(2) as pool:
        if backend == "dask":  # another machine, in principle: no key, no descriptors
            with pytest.raises(conveyor.SerializationError, match=r"AccessRefusedError.*authkey"):
                pool.apply(pipe_tasks.send_three, (b,))
            return
        assert pool.apply(pipe_tasks.send_three, (b,)) == "sent"
        assert [a.recv() for _ in range(3)] == [0, 1, 2]
        _expect_eof(a)  # the worker lives on; the task's end was dropped with the task


def test_the_parent_may_close_its_copy_at_once_after_start(ctx):
    a, b = conveyor.Pipe()
    child = ctx.Process(target=pipe_tasks.send_then, args=(b, 3, "return"))
    child.start()
    b.close()  # before a spawned child has unpickled its own: the end is handed, not gone
    assert [a.recv() for _ in range(3)] == [0, 1, 2]
    _expect_eof(a)
    child.join(WAIT_S)


def test_a_process_without_the_key_is_refused_and_the_others_are_still_served(ctx):
    a, b = conveyor.Pipe()
    pickled = pickle.dumps(b)  # its descriptors wait in this process's resource sharer
    said = refused_to_a_stranger(pickled)  # a fresh interpreter: another authkey
    assert said.startswith("refused:") and "authkey" in said, said
    child = ctx.Process(target=pipe_tasks.unpickle_and_send, args=(pickled, "taken"))
    child.start()  # a child holds the key: it is served the very same end
    assert a.recv() == "taken"
    _expect_eof(a)
    child.join(WAIT_S)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_a_child_that_dies_before_unpickling_its_end_still_ends_the_stream(method):
    ctx = multiprocessing.get_context(method)
    a, b = conveyor.Pipe()
    child = ctx.Process(target=pipe_tasks.send_three, args=(pipe_tasks.ExitOnUnpickle(), b))
    child.start()
    child.join(WAIT_S)
    assert child.exitcode == 3
    _expect_eof(a)  # the end was the child's from its start, though it never saw it
    assert process_gone(child.pid)
