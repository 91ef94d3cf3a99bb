"""A deadline for the connections one piece of work opens to servers a team named.

A drained sync runs on a thread of a `sync` process (worker.sync.drain), where
no job timeout reaches it, and a socket's timeout bounds one read, not a sync:
a server that answers a byte at a time, each byte within the timeout, holds the
thread for as long as it likes. A team's few such mailboxes would hold every
thread of every `sync` process, and no team's replies would be read. So::

    with deadline(seconds) as limit:    every connection `core.outbound.open_socket`
        ... the sync ...                 opens in this thread inside the block, and
                                         every pooled one it takes up again
                                         (core.outbound_http), is adopted: a duplicate
                                         of its descriptor is kept with the limit
    time up ─▶ the watchdog thread shuts each adopted connection down (shutdown(2) on
               the duplicate acts on the connection itself): a read blocked on it
               returns at once, the provider fails as on a dropped connection, and
               `limit.cut` (`cut_off()` inside the block) says why; a connection
               opened later in the block is shut down as it is adopted
    block ends ─▶ the duplicates are closed

Why a duplicate: TLS wraps a socket by moving its descriptor to a new object,
so the object `open_socket` returned is empty by then; and a bare descriptor
number may name another connection once its owner has closed it. The duplicate
keeps the connection's socket open until the block ends (one its owner closed
meanwhile sends its FIN then, a moment later); the watchdog and the block's end
take the limit's lock, so neither acts on a duplicate the other is closing.

The watchdog looks at the running limits every `CHECK_SECONDS`: a limit is kept
to within that. One thread per process, started on first use (again in a forked
child, where the parent's does not run). Servers an operator configures (the
Gmail and Graph endpoints) are not reached through `open_socket` and are not
limited here; their calls have their libraries' timeouts.

Must never: shut down a connection of another thread's work, or one after its
block ended.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHECK_SECONDS = 0.25

_local = threading.local()


class Limit:
    """The connections of one block of work and when they are shut down (`deadline`)."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self.cut = False  # expired, and some connection of it shut down
        self._held: list[socket.socket] = []
        self._ended = False
        self._lock = threading.Lock()

    def adopt(self, sock: socket.socket) -> None:
        """Keep a duplicate of `sock` to shut it down when time is up (at once if it is)."""
        try:
            # fromfd duplicates the descriptor: SSLSocket refuses dup() itself.
            duplicate = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        except OSError:
            return  # closed already: nothing to wait on
        with self._lock:
            if self._ended:
                duplicate.close()
                return
            self._held.append(duplicate)
            if self.expired:
                self.cut = True
                _shut(duplicate)

    def expire(self) -> None:
        """Time is up: shut every adopted connection down (the watchdog's call)."""
        with self._lock:
            if self._ended:
                return
            self.expired = True
            self.cut = bool(self._held)
            for duplicate in self._held:
                _shut(duplicate)

    def end(self) -> None:
        with self._lock:
            self._ended = True
            held, self._held = self._held, []
            for duplicate in held:
                duplicate.close()


def _shut(duplicate: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the far end closed it already
        duplicate.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh (in a forked child: the parent's thread and lock state do not run)."""
        self._wake = threading.Condition()
        self._running: set[Limit] = set()
        self._thread: threading.Thread | None = None

    def add(self, limit: Limit) -> None:
        with self._wake:
            idle = not self._running
            self._running.add(limit)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, name="outbound-deadline", daemon=True
                )
                self._thread.start()
            if idle:  # else it looks again within CHECK_SECONDS anyway
                self._wake.notify()

    def drop(self, limit: Limit) -> None:
        with self._wake:
            self._running.discard(limit)

    def _watch(self) -> None:
        while True:
            with self._wake:
                while not self._running:
                    self._wake.wait()
                self._wake.wait(CHECK_SECONDS)
                now = time.monotonic()
                due = [limit for limit in self._running if limit.at <= now]
                self._running.difference_update(due)
            for limit in due:
                limit.expire()


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG.reset)


@contextmanager
def deadline(seconds: float) -> Iterator[Limit]:
    """Shut down, `seconds` from now, every connection the block opens in this thread."""
    limit = Limit(seconds)
    outer = getattr(_local, "limit", None)
    _local.limit = limit
    _WATCHDOG.add(limit)
    try:
        yield limit
    finally:
        _local.limit = outer
        _WATCHDOG.drop(limit)
        limit.end()


def adopt(sock: socket.socket) -> None:
    """Put `sock` under the running block's deadline, if this thread is in one."""
    limit: Limit | None = getattr(_local, "limit", None)
    if limit is not None:
        limit.adopt(sock)


def cut_off() -> bool:
    """Whether this thread's running block passed its deadline and had connections shut
    down (a block that opened none, e.g. a Gmail sync, is never cut off)."""
    limit: Limit | None = getattr(_local, "limit", None)
    return limit is not None and limit.cut
