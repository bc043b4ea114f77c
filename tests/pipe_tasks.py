"""Functions the pipe tests run in other processes (importable under spawn and forkserver)."""

from __future__ import annotations

import os
import pickle
import signal
import time


def send_then(conn, count, then="die"):
    """Send ``count`` numbers, then SIGKILL itself, close and linger, or just return."""
    for i in range(count):
        conn.send(i)
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    elif then == "close_and_linger":
        conn.close()
        time.sleep(60)  # alive: only the close can end the stream


def announce_then_sleep(conn, started, seconds=60.0):
    """Hold ``conn`` (handed as an argument), say so, and neither read nor write."""
    started.put(os.getpid())
    time.sleep(seconds)


def receive_end_and_send(ends, count):
    """Take a pipe end from a queue, send on it, then SIGKILL itself."""
    conn = ends.get(timeout=30)
    send_then(conn, count, "die")


def receive_end_and_return(ends, done):
    """Take a pipe end from a queue (so this process holds it), say so, and return."""
    ends.get(timeout=30)
    done.put(os.getpid())


def unpickle_and_send(pickled, message):
    conn = pickle.loads(pickled)
    conn.send(message)


def send_three(conn):
    for i in range(3):
        conn.send(i)
    return "sent"


class ExitOnUnpickle:
    """Unpickling this ends the process at once: a child that dies while it is still
    being given its arguments."""

    def __reduce__(self):
        return (os._exit, (3,))
