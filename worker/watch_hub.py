"""Many held push connections on a few threads: the listener's IMAP IDLEs.

A watch is a generator of steps (`worker.sync.watch_steps`). The hub runs each
step on a thread of one of two pools and parks the watch, between steps, on one
selector thread::

    start(key, steps) ─▶ connect pool ─▶ step: log in, SELECT, IDLE ─┐
                         (CONNECTS)       (a back-off's Sleep ends    │ yields
                                           here too: a new attempt)  ▼
        selector thread: every parked socket and deadline ◀── Readable(sock, timeout)
                         Sleep(seconds)                   ◀── Sleep
             │ readable (True) / timed out (False)
             ▼
        hold pool ─▶ step: read the untagged answers, DONE, IDLE ─▶ parked again
        (HOLDS)

So 10,000 IDLEs cost the selector's registrations and a few dozen threads, not
10,000 threads: started all at once, 10,000 blocked threads queued for the GIL,
let their live marks lapse and took the machine (bench.scale_imap). A step
that blocks holds one pool thread: the connect pool bounds how many
connections are being set up at once (a login to a slow server blocks; a
login storm on restart queued 10,000 logins at Dovecot and overflowed it).
A round yields its waits for the server (`worker.sync.imap_idle`), so a hold
thread only does the round's work: HOLDS threads need not grow with the servers'
round trips, and a hung server holds none.

`stop(key)` ends a watch: parked, it is closed at once (on the hold pool: its
`finally` lets the connection go); running, it is closed at its next yield. A step that
raises, or returns, ends its watch; the hub logs what was raised (the watch
itself decides what to retry). Every change to the selector and the deadlines
happens on the selector thread: other threads send it messages.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from worker.sync.watch_steps import Readable, Sleep, Step, Steps

log = logging.getLogger(__name__)


class _Pool:
    """`size` threads running what `submit` hands them, in order.

    Not a ThreadPoolExecutor: its `submit` makes a Future and takes a
    semaphore each time, and at 10,000 IDLEs (~330 rounds a second, each
    resumed twice) that bookkeeping was a fifth of the listener's time holding
    the GIL (py-spy, bench.scale_imap). Nothing here waits for a result, and
    every job catches what it raises itself.
    """

    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[object, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Callable[..., None], *args: object) -> None:
        self._jobs.put((job, args))

    def shutdown(self) -> None:
        """Drop the jobs not begun; each thread ends after the job it runs."""
        with contextlib.suppress(queue.Empty):
            while True:
                self._jobs.get_nowait()
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, args = item
            try:
                job(*args)
            except Exception:  # a job's own failure is its own; the thread goes on
                log.exception("watch_hub_job_failed job=%s", getattr(job, "__name__", job))


@dataclass(eq=False)
class _Watch:
    key: Hashable
    steps: Steps
    ended: threading.Event = field(default_factory=threading.Event)
    stop_asked: bool = False
    parked: Step | None = None  # what it waits for, while it waits on the selector thread
    turn: int = 0  # which park a deadline belongs to (a stale one is skipped)


class WatchHub:
    """Runs watches' steps on two pools and parks them on one selector; see the module."""

    def __init__(self, *, connects: int, holds: int, name: str = "watch") -> None:
        self._connect = _Pool(connects, f"{name}-connect")
        self._hold = _Pool(holds, f"{name}-hold")
        self._lock = threading.Lock()
        self._watches: dict[Hashable, _Watch] = {}
        self._inbox: list[tuple[str, _Watch, Step | None]] = []
        self._selector = selectors.DefaultSelector()
        self._deadlines: list[tuple[float, int, int, _Watch]] = []
        self._order = itertools.count()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self._wake_write.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=f"{name}-selector", daemon=True)
        self._thread.start()

    # -- the listener's side -------------------------------------------------------------

    def start(self, key: Hashable, steps: Steps) -> None:
        """Run `steps` as the watch `key` (a watch still ending under that key ends alone)."""
        watch = _Watch(key, steps)
        with self._lock:
            self._watches[key] = watch
        self._connect.submit(self._run, watch, None)

    def stop(self, key: Hashable) -> None:
        """End the watch `key`, if there is one: at once if parked, else at its next yield."""
        with self._lock:
            watch = self._watches.pop(key, None)
        if watch is not None:
            watch.stop_asked = True  # a step not begun yet is not begun at all
            self._send("stop", watch, None)

    def running(self, key: Hashable) -> bool:
        """True while the watch `key` has neither ended nor been asked to stop."""
        with self._lock:
            watch = self._watches.get(key)
        return watch is not None and not watch.ended.is_set()

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for w in self._watches.values() if not w.ended.is_set())

    def parked(self) -> int:
        """How many watches wait on the selector now (a socket or a back-off's deadline)."""
        return (
            len(self._selector.get_map())
            - 1
            + sum(
                1
                for _, _, turn, w in list(self._deadlines)
                if turn == w.turn and isinstance(w.parked, Sleep)
            )
        )

    def close(self, timeout: float) -> None:
        """Stop every watch and wait up to `timeout` seconds for them to end."""
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for watch in watches:
            watch.stop_asked = True
            self._send("stop", watch, None)
        deadline = time.monotonic() + timeout
        for watch in watches:
            watch.ended.wait(max(0.0, deadline - time.monotonic()))
        self._closing = True
        self._wake()
        self._connect.shutdown()
        self._hold.shutdown()

    # -- the pools' side -----------------------------------------------------------------

    def _run(self, watch: _Watch, value: bool | None) -> None:
        """One step of `watch`, on a pool thread; then park it (or end it)."""
        if watch.stop_asked:  # stopped while it waited for a thread: no connection made
            self._close(watch)
            return
        try:
            step = watch.steps.send(value)
        except StopIteration:
            self._ended(watch)
            return
        except Exception:
            log.exception("watch_failed key=%s", watch.key)
            self._ended(watch)
            return
        self._send("park", watch, step)

    def _close(self, watch: _Watch) -> None:
        try:
            watch.steps.close()
        except Exception:
            log.exception("watch_close_failed key=%s", watch.key)
        self._ended(watch)

    def _ended(self, watch: _Watch) -> None:
        watch.ended.set()
        with self._lock:
            if self._watches.get(watch.key) is watch:
                del self._watches[watch.key]

    def _send(self, what: str, watch: _Watch, step: Step | None) -> None:
        with self._lock:
            self._inbox.append((what, watch, step))
        self._wake()

    def _wake(self) -> None:
        # BlockingIOError: a wake-up is already pending; OSError: the hub is closed.
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    # -- the selector thread -------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing:
            try:
                self._turn()
            except Exception:  # the thread every held IDLE waits on must not die quietly
                if self._closing:
                    break
                log.exception("watch_hub_loop_failed")
                time.sleep(0.1)
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    def _turn(self) -> None:
        """One wait on the selector, then what it woke for, what timed out, and messages."""
        timeout = None
        if self._deadlines:
            timeout = max(0.0, self._deadlines[0][0] - time.monotonic())
        for key, _ in self._selector.select(timeout):
            if key.fileobj is self._wake_read:
                with contextlib.suppress(BlockingIOError):
                    self._wake_read.recv(4096)
            else:
                self._resume(key.data, True)
        self._expire(time.monotonic())
        self._take_messages()

    def _take_messages(self) -> None:
        with self._lock:
            messages, self._inbox = self._inbox, []
        for what, watch, step in messages:
            try:
                if what == "stop":
                    if watch.parked is not None:
                        self._unpark(watch)
                        self._hold.submit(self._close, watch)
                elif watch.stop_asked:  # asked to stop while it ran: closed instead of parked
                    self._hold.submit(self._close, watch)
                else:
                    assert step is not None
                    self._park(watch, step)
            except Exception:  # one watch's failure ends that watch, never the others
                if self._closing:
                    return
                log.exception("watch_park_failed key=%s", watch.key)
                self._unpark(watch)
                self._hold.submit(self._close, watch)

    def _park(self, watch: _Watch, step: Step) -> None:
        watch.parked = step
        watch.turn += 1
        if isinstance(step, Readable):
            try:
                self._selector.register(step.sock, selectors.EVENT_READ, watch)
            except (ValueError, KeyError, OSError):
                # A closed socket (or one already registered): the step finds out why.
                watch.parked = None
                self._hold.submit(self._run, watch, True)
                return
            wait = step.timeout
        else:
            wait = step.seconds
        entry = (time.monotonic() + wait, next(self._order), watch.turn, watch)
        heapq.heappush(self._deadlines, entry)

    def _unpark(self, watch: _Watch) -> Step | None:
        step, watch.parked = watch.parked, None
        watch.turn += 1  # its deadline, still in the heap, is now stale
        if isinstance(step, Readable):
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(step.sock)
        return step

    def _resume(self, watch: _Watch, readable: bool) -> None:
        step = self._unpark(watch)
        if step is None:
            return
        if isinstance(step, Sleep):  # after a back-off, a new connection: the connect pool
            self._connect.submit(self._run, watch, None)
        else:
            self._hold.submit(self._run, watch, readable)

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, turn, watch = heapq.heappop(self._deadlines)
            if turn == watch.turn and watch.parked is not None:
                self._resume(watch, False)
