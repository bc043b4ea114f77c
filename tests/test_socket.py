"""The framed socket: frames of any size, back to back, with descriptors, arrive intact."""

from __future__ import annotations

import os
import threading

import pytest

from conveyor._transport import _shm
from conveyor._transport._socket import (
    HEADER_BYTES,
    READ_BYTES,
    ParentEnd,
    WorkerEnd,
    make_socket_pair,
)
from conveyor.errors import SocketClosed

SIZES = [0, 1, 11, 4096, 65535, 65536, 100_000, 3_000_000, 7]


def _drain_writes(parent: ParentEnd) -> None:
    while not parent.flush():
        pass  # a stalled write finishes once the reader has taken enough


def test_frames_of_every_size_reach_the_worker_in_order_and_intact():
    parent_sock, child_sock = make_socket_pair()
    parent, worker = ParentEnd(parent_sock), WorkerEnd(child_sock)
    payloads = [os.urandom(size) for size in SIZES]
    received = []
    reader = threading.Thread(
        target=lambda: received.extend(worker.recv(spin_s=0.001) for _ in payloads)
    )
    reader.start()
    for payload in payloads:
        parent.write(payload)
    _drain_writes(parent)
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert [bytes(p) for p, _ in received] == payloads
    assert all(fds == [] for _, fds in received)
    parent.close()
    worker.sock.close()


@pytest.mark.skipif(not _shm.AVAILABLE, reason="descriptor passing is Linux-only here")
def test_descriptors_travel_with_their_own_frame():
    parent_sock, child_sock = make_socket_pair()
    parent, worker = ParentEnd(parent_sock), WorkerEnd(child_sock)
    r1, w1 = os.pipe()
    parent.write(b"plain")
    parent.write(b"with a descriptor", [w1])  # the socket end owns (and closes) w1 now
    parent.write(b"plain again")
    frames = [worker.recv() for _ in range(3)]
    assert [(bytes(p), len(fds)) for p, fds in frames] == [
        (b"plain", 0),
        (b"with a descriptor", 1),
        (b"plain again", 0),
    ]
    (received_w,) = frames[1][1]
    os.write(received_w, b"x")  # it is the pipe's write end, alive in this process
    assert os.read(r1, 1) == b"x"
    for fd in (r1, received_w):
        os.close(fd)
    parent.close()
    worker.sock.close()


def test_the_worker_sees_the_parent_closing_as_socket_closed():
    parent_sock, child_sock = make_socket_pair()
    parent, worker = ParentEnd(parent_sock), WorkerEnd(child_sock)
    parent.write(b"last words")
    parent.close()
    assert bytes(worker.recv()[0]) == b"last words"
    with pytest.raises(SocketClosed):
        worker.recv(spin_s=0.001)
    worker.sock.close()


def _read_frames_until(parent: ParentEnd, count: int) -> list:
    import select

    frames: list = []
    while len(frames) < count:
        select.select([parent.sock], [], [], 5)
        frames += parent.read_frames()
    return frames


def test_frames_of_every_size_reach_the_parent_in_order_and_intact_with_their_descriptors():
    parent_sock, child_sock = make_socket_pair()
    parent, worker = ParentEnd(parent_sock), WorkerEnd(child_sock)
    sizes = [*SIZES, 5_000_000, 3, 2_000_000]
    payloads = [os.urandom(size) for size in sizes]
    pipes = [os.pipe() for _ in payloads] if _shm.AVAILABLE else []

    def send_all():
        for i, payload in enumerate(payloads):
            fds = [pipes[i][1]] if pipes and i % 3 == 0 else []
            worker.send(payload[5:], fds, prefix=payload[:5])

    writer = threading.Thread(target=send_all)
    writer.start()
    frames = _read_frames_until(parent, len(payloads))
    writer.join(timeout=30)
    assert [bytes(p) for p, _ in frames] == payloads  # prefix and payload, joined on the wire
    if pipes:
        assert [len(fds) for _, fds in frames] == [
            1 if i % 3 == 0 else 0 for i in range(len(sizes))
        ]
        for _, fds in frames:
            for fd in fds:
                os.close(fd)
        for i, (r, w) in enumerate(pipes):
            os.close(r)
            if i % 3:  # the others were sent, and the socket end closed them
                os.close(w)
    parent.close()
    worker.sock.close()


def test_what_a_dead_worker_sent_is_still_read_after_a_write_to_it_failed():
    # The worker answers, then dies with a task it never read still in its socket: the
    # parent's next write fails, and the answers must still be read, not thrown away
    # with the write side (their tasks would be charged with the crash).
    parent_sock, child_sock = make_socket_pair()
    parent, worker = ParentEnd(parent_sock), WorkerEnd(child_sock)
    parent.write(b"a task it never reads")
    worker.send(b"answer 1")
    worker.send(b"answer 2")
    child_sock.close()
    with pytest.raises(SocketClosed):
        parent.write(b"one more task")
    assert parent.write_failed and not parent.closed
    assert [bytes(p) for p, _ in parent.read_frames()] == [b"answer 1", b"answer 2"]
    with pytest.raises(SocketClosed):
        parent.read_frames()
    assert parent.closed
    parent.close()


def test_a_reset_right_after_a_full_read_keeps_the_frames_read_before_it():
    # Frames that fill exactly one read: the next read in the same call meets the reset
    # (the worker died with unread input), and what was read before it must survive.
    parent_sock, child_sock = make_socket_pair()
    parent, worker = ParentEnd(parent_sock), WorkerEnd(child_sock)
    per_frame = 1024
    count = READ_BYTES // per_frame
    small = [os.urandom(per_frame - HEADER_BYTES) for _ in range(count)]
    parent.write(b"a task it never reads")
    for payload in small:
        worker.send(payload)
    child_sock.close()
    frames = _read_frames_until_closed(parent)
    assert [bytes(p) for p, _ in frames] == small
    parent.close()


def _read_frames_until_closed(parent: ParentEnd) -> list:
    frames: list = []
    while True:
        try:
            frames += parent.read_frames()
        except SocketClosed:
            return frames
