"""Functions the queue tests run in other processes (importable under spawn and forkserver)."""

from __future__ import annotations

import os
import pickle
import signal
import time


def produce(q, start, count):
    for i in range(start, start + count):
        q.put(i)
    return count


def produce_star(args):
    return produce(*args)


def produce_and_close(q, start, count):
    produce(q, start, count)
    q.close()


def produce_after(q, start, count, delay_s):
    time.sleep(delay_s)
    produce_and_close(q, start, count)


def announce_then_produce(q, start, count, started, delay_s=0.0, then="close"):
    """Say "started" (this process now holds the queue), then wait, put, and close (or
    SIGKILL itself: no close, no exit handlers)."""
    started.put(os.getpid())
    time.sleep(delay_s)
    produce(q, start, count)
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    q.close()


def produce_then_die(q, start, count):
    """Put, then SIGKILL itself: no close(), no exit handlers."""
    produce(q, start, count)
    os.kill(os.getpid(), signal.SIGKILL)


def drain(q, out):
    """Take until end of stream; report the items taken."""
    out.put(list(q))


def get_one(q, out):
    try:
        out.put(("item", q.get(timeout=60)))
    except BaseException as exc:
        out.put(("error", type(exc).__name__))


def put_one(q, out, value):
    try:
        q.put(value, timeout=60)
        out.put(("put", value))
    except BaseException as exc:
        out.put(("error", type(exc).__name__))


def announce_then_block_in_get(q, ready):
    ready.put(os.getpid())
    q.get(timeout=60)


def put_big_forever(q, ready, nbytes):
    """Announce, then put large items until killed."""
    payload = b"x" * nbytes
    ready.put(os.getpid())
    while True:
        q.put(payload)


def put_then_exit_at_once(q, count):
    for i in range(count):
        q.put(i)
    os._exit(0)  # no finalizers: what was put must already be in the kernel


def put_many_unread_then_exit(q, count, flush_s):
    from conveyor._queues import _backlog

    _backlog.EXIT_FLUSH_S = flush_s
    payload = b"y" * 1000
    for _ in range(count):
        q.put(payload)


def sleep_forever():
    while True:
        time.sleep(1)


def work_and_mark_done(q):
    """Take items until end of stream, marking each done."""
    for _ in q:
        time.sleep(0.001)
        q.task_done()


def take_one_then_die(q, ready):
    q.get(timeout=60)
    ready.put(os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


class FailsToUnpickle:
    """Pickles fine; raises when unpickled (in the consumer)."""

    def __reduce__(self):
        return (_refuse, ())


def _refuse():
    raise RuntimeError("cannot be rebuilt here")


def unpickle_and_put(pickled, item):
    q = pickle.loads(pickled)
    q.put(item)
    q.close()


def put_then_hold(q, started):
    """Put one item (a producer from now on), say so, and hold the queue open."""
    q.put(os.getpid())
    started.put(os.getpid())
    time.sleep(60)


def take_some_then_stop(q, count, taken, then):
    """Take ``count`` items, report them, then stop reading: SIGKILL itself, or hang on."""
    taken.put([q.get(timeout=30) for _ in range(count)])
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
