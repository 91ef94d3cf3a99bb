"""A held push connection written as steps, so that waiting on it holds no thread.

A watch (IMAP IDLE today) is a generator. Between the short pieces of work it
does on a thread (log in, IDLE, read what the server said, DONE), it yields what
it waits for:

    Readable(sock, timeout)  resumed with True once `sock` can be read, False when
                             `timeout` seconds pass first
    Sleep(seconds)           resumed with None after `seconds` (a reconnect's back-off)

Whoever drives it decides where the waiting happens: the `listener` parks every
watch of its process on one selector (`worker.watch_hub`: 10,000 IDLEs wait on
one thread instead of 10,000); `run_blocking` waits on the calling thread (a
one-off watch, the tests). Closing the generator (`close()`) ends the watch:
its `finally` blocks release the connection.

Must never: wait inside a step for something that can be yielded (a blocked
read there holds a thread of the driver's pool).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass

# How often a watch driven by `run_blocking` looks at its `stop` while it waits.
STOP_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class Readable:
    """Wait until `sock` has something to read, for at most `timeout` seconds."""

    sock: socket.socket
    timeout: float


@dataclass(frozen=True)
class Sleep:
    """Wait `seconds` (a back-off before reconnecting)."""

    seconds: float


Step = Readable | Sleep
# Yields what it waits for; sent True/False after a Readable, None after a Sleep.
Steps = Generator[Step, bool | None, None]


def run_blocking(steps: Steps, stop: threading.Event) -> None:
    """Drive `steps` on this thread until they end, or `stop` is set (they are closed).

    Exceptions from the steps propagate to the caller.
    """
    value: bool | None = None
    try:
        while not stop.is_set():
            try:
                step = steps.send(value)
            except StopIteration:
                return
            value = _wait(step, stop)
    finally:
        steps.close()


def _wait(step: Step, stop: threading.Event) -> bool | None:
    if isinstance(step, Sleep):
        stop.wait(step.seconds)
        return None
    deadline = time.monotonic() + step.timeout
    with selectors.DefaultSelector() as selector:
        selector.register(step.sock, selectors.EVENT_READ)
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if selector.select(min(left, STOP_CHECK_SECONDS)):
                return True
    return False
