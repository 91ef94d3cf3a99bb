"""One thread per process that ends the blocked reads the listener was asked to stop.

A held EWS stream is a read blocked on a socket (exchangelib reads it; IMAP
IDLEs wait on the listener's watch hub instead); setting its `stop` event does
not wake it. Rather than each of 10,000 watches waking every second to look at
its own event, each registers here (`watch`) and one thread looks every
`STOP_CHECK_SECONDS`, ending (`end(thing)`: shut the socket, close the
stream) those whose event is set. The thread ends with the last watch, so a
process that holds none keeps no thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

STOP_CHECK_SECONDS = 1.0

T = TypeVar("T", bound=Hashable)


class Stopper(Generic[T]):
    """Ends each watched thing whose `stop` is set; see the module docstring."""

    def __init__(self, name: str, end: Callable[[T], None]) -> None:
        self.name = name
        self._end = end
        self._lock = threading.Lock()
        self._held: dict[T, threading.Event] = {}
        self._thread: threading.Thread | None = None

    def watch(self, thing: T, stop: threading.Event) -> None:
        with self._lock:
            self._held[thing] = stop
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def forget(self, thing: T) -> None:
        with self._lock:
            self._held.pop(thing, None)

    def _run(self) -> None:
        while True:
            time.sleep(STOP_CHECK_SECONDS)
            with self._lock:
                if not self._held:
                    self._thread = None
                    return
                stopped = [thing for thing, stop in self._held.items() if stop.is_set()]
                for thing in stopped:
                    del self._held[thing]
            for thing in stopped:
                self._end(thing)
