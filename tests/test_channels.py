"""conveyor.channel: send and receive handles, each counted until it is closed or its
process dies; receivers see the end once no sender is left, senders an error once no
receiver is."""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
import time

import pytest

import channel_tasks
import conveyor
from conftest import WAIT_S, wait_until

METHODS = ["fork", "spawn", "forkserver"]


@pytest.fixture(params=METHODS)
def ctx(request):
    return multiprocessing.get_context(request.param)


# --- one process ----------------------------------------------------------------------


def test_closing_the_only_sender_ends_the_stream_even_if_nothing_was_sent():
    tx, rx = conveyor.channel(4)
    tx.close()
    with pytest.raises(conveyor.EndOfStream):
        rx.receive(timeout=WAIT_S)
    assert list(rx) == []


def test_the_stream_ends_only_once_every_clone_is_closed():
    tx, rx = conveyor.channel(4)
    other = tx.clone()
    tx.send(1)
    tx.close()
    assert rx.receive(timeout=WAIT_S) == 1
    with pytest.raises(queue.Empty):
        rx.receive(timeout=0.05)  # `other` is still open: not the end, just nothing yet
    assert rx.statistics().producers == 1
    other.send(2)
    other.close()
    assert list(rx) == [2]


def test_a_full_channel_makes_send_wait_and_send_nowait_refuse():
    tx, rx = conveyor.channel(2)
    tx.send_many([1, 2])
    with pytest.raises(queue.Full):
        tx.send_nowait(3)
    with pytest.raises(queue.Full):
        tx.send(3, timeout=0.05)
    threading.Timer(0.1, rx.receive).start()
    tx.send(3, timeout=WAIT_S)  # room made by the receive
    tx.close()
    assert list(rx) == [2, 3]


def test_a_closed_handle_refuses_use_and_a_channel_needs_a_positive_bound():
    tx, rx = conveyor.channel(1)
    tx.close()
    rx.close()
    with pytest.raises(conveyor.ChannelClosedError):
        tx.send(1)
    with pytest.raises(conveyor.ChannelClosedError):
        rx.receive()
    with pytest.raises(conveyor.ChannelClosedError):
        tx.clone()
    for bad in (0, -1, 2.5, None, True):
        with pytest.raises(ValueError, match="maxsize"):
            conveyor.channel(bad)


def test_closing_every_receiver_makes_send_raise_and_counts_what_was_left():
    tx, rx = conveyor.channel(8)
    tx.send_many(range(3))
    rx.close()
    time.sleep(0.02)  # past the send's once-per-10-ms look
    with pytest.raises(conveyor.ReceiversGoneError):
        tx.send(3)
    assert tx.statistics().undeliverable == 3


# --- processes --------------------------------------------------------------------------


def test_senders_in_child_processes_deliver_everything_and_the_stream_ends(ctx):
    tx, rx = conveyor.channel(64)
    senders = [
        ctx.Process(target=channel_tasks.send_range, args=(tx, k * 2_000, 2_000)) for k in range(3)
    ]
    for p in senders:
        p.start()
    tx.close()  # the children hold their own handles from their start
    assert sorted(rx) == list(range(6_000))
    for p in senders:
        p.join(WAIT_S)
    stats = rx.statistics()
    assert (stats.put, stats.got, stats.producers, stats.consumers) == (6_000, 6_000, 0, 1)


def test_a_sender_sigkilled_mid_stream_ends_it_and_what_it_sent_arrives(ctx):
    tx, rx = conveyor.channel(1_000)
    child = ctx.Process(target=channel_tasks.send_then_die, args=(tx, 500))
    child.start()
    tx.close()
    assert list(rx) == list(range(500))
    child.join(WAIT_S)
    assert child.exitcode == -signal.SIGKILL


def test_a_forked_child_not_given_the_handle_does_not_hold_the_stream_open():
    ctx = multiprocessing.get_context("fork")
    tx, rx = conveyor.channel(4)
    bystander = ctx.Process(target=channel_tasks.sleep, args=(60,))
    bystander.start()  # inherits every handle, as fork does, but was handed none
    try:
        tx.send("x")
        tx.close()
        assert list(rx) == ["x"]
    finally:
        bystander.kill()
        bystander.join(WAIT_S)


def test_a_handle_sent_through_a_queue_counts_as_a_sender_in_the_process_that_took_it(ctx):
    tx, rx = conveyor.channel(16)
    handles = conveyor.Queue()
    child = ctx.Process(target=channel_tasks.take_handle_and_send, args=(handles, 50))
    child.start()
    handles.put(tx.clone())  # on its way, the clone counts: the stream cannot end early
    tx.close()
    assert sorted(rx) == list(range(50))
    child.join(WAIT_S)


def test_clones_given_to_pool_tasks_end_the_stream_when_the_tasks_are_done():
    tx, rx = conveyor.channel(32)
    with conveyor.WorkerPool(2) as pool:
        # Six tasks on two workers: four wait while two run, each holding its clone.
        futures = [
            pool.submit(channel_tasks.send_range, tx.clone(), k * 100, 100) for k in range(6)
        ]
        tx.close()
        assert sorted(rx) == list(range(600))
        assert [f.result(timeout=WAIT_S) for f in futures] == [100] * 6


def test_a_send_blocked_on_a_full_channel_wakes_when_the_last_receiver_is_killed(ctx):
    tx, rx = conveyor.channel(10)
    taken = ctx.SimpleQueue()
    reader = ctx.Process(target=channel_tasks.receive_then_die, args=(rx, 5, taken))
    reader.start()
    rx.close()  # the child's handle is the only receiver
    sent: list[int] = []

    def send_until_refused():
        while True:
            tx.send(len(sent), timeout=WAIT_S)
            sent.append(len(sent))

    with pytest.raises(conveyor.ReceiversGoneError):
        send_until_refused()
    wait_until(lambda: not taken.empty(), "the reader's report")
    assert taken.get() == list(range(5))
    reader.join(WAIT_S)  # its descriptors close before it is a zombie: count it after
    assert reader.exitcode == -signal.SIGKILL
    stats = tx.statistics()
    assert len(sent) == 15  # five taken, ten in the channel when the reader died
    assert (stats.undeliverable, stats.consumers) == (10, 0)
