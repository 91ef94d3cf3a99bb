"""The watch hub drives many watches' steps on a few threads, over real sockets.

Each watch here is a generator of `worker.sync.watch_steps` steps reading one
end of a socket pair; the test writes to the other end. What a listener needs
of the hub: a parked watch resumes when its socket speaks (True) or its time is
up (False); a stopped watch is closed at once if parked, at its next step if
running, and its `finally` runs; a back-off's Sleep resumes on the connect pool,
a socket on the hold pool; a step that raises ends only its own watch; and
thousands of parked watches add no thread.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from worker.sync.watch_steps import Readable, Sleep, Steps, run_blocking
from worker.watch_hub import WatchHub


@pytest.fixture
def hub() -> Iterator[WatchHub]:
    running = WatchHub(connects=2, holds=2, name="test")
    yield running
    running.close(timeout=2)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


class Pair:
    """A socket pair: the watch reads `ours`, the test writes `theirs`."""

    def __init__(self) -> None:
        self.ours, self.theirs = socket.socketpair()

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


def reader(pair: Pair, seen: list[object], *, timeout: float = 30.0) -> Steps:
    """Record what each wait ended with, and the bytes read; record 'closed' at the end."""
    try:
        while True:
            readable = yield Readable(pair.ours, timeout)
            seen.append((readable, threading.current_thread().name.split("_")[0]))
            if readable:
                seen.append(pair.ours.recv(100))
    finally:
        seen.append("closed")


def test_a_parked_watch_resumes_when_its_socket_speaks_or_its_time_is_up(hub: WatchHub) -> None:
    pair, seen = Pair(), list[object]()
    hub.start("a", reader(pair, seen, timeout=0.3))
    wait_for("the time-out", lambda: len(seen) >= 1)
    assert seen[0] == (False, "test-hold")
    pair.theirs.send(b"* 3 EXISTS\r\n")
    wait_for("the read", lambda: b"* 3 EXISTS\r\n" in seen)
    assert (True, "test-hold") in seen
    assert hub.running("a")
    pair.close()


def test_a_stopped_parked_watch_is_closed_at_once_and_its_finally_runs(hub: WatchHub) -> None:
    pair, seen = Pair(), list[object]()
    hub.start("a", reader(pair, seen, timeout=60))
    wait_for("the watch to park", lambda: hub.running("a") and hub.parked() == 1)
    started = time.monotonic()
    hub.stop("a")
    wait_for("the close", lambda: "closed" in seen, 2)
    assert time.monotonic() - started < 1.0
    assert not hub.running("a") and len(hub) == 0
    pair.theirs.send(b"late\r\n")  # a closed watch reads nothing more
    time.sleep(0.2)
    assert seen == ["closed"]
    pair.close()


def test_a_watch_stopped_while_its_step_runs_is_closed_at_its_next_yield(hub: WatchHub) -> None:
    in_step, release, seen = threading.Event(), threading.Event(), list[object]()

    def slow_login() -> Steps:
        try:
            in_step.set()
            release.wait(5)  # a login to a slow server
            yield Sleep(60)
            seen.append("resumed")
        finally:
            seen.append("closed")

    hub.start("a", slow_login())
    assert in_step.wait(2)
    hub.stop("a")
    assert not hub.running("a")
    release.set()
    wait_for("the close", lambda: "closed" in seen, 2)
    assert seen == ["closed"]


def test_a_watch_stopped_before_its_first_step_never_runs_it() -> None:
    hub = WatchHub(connects=1, holds=1, name="queued")
    busy, release, began = threading.Event(), threading.Event(), list[str]()

    def blocking() -> Steps:
        busy.set()
        release.wait(5)  # holds the one connect thread
        yield Sleep(60)

    def connect(name: str) -> Steps:
        began.append(name)  # where a login would be
        yield Sleep(60)

    try:
        hub.start("first", blocking())
        assert busy.wait(2)
        hub.start("queued", connect("queued"))  # waits for the connect thread
        hub.stop("queued")
        release.set()
        hub.start("after", connect("after"))
        wait_for("the next watch's step", lambda: began == ["after"])
        assert not hub.running("queued")
    finally:
        hub.close(timeout=2)


def test_a_back_off_resumes_on_the_connect_pool(hub: WatchHub) -> None:
    pools: list[str] = []

    def backing_off() -> Steps:
        pools.append(threading.current_thread().name.split("_")[0])
        yield Sleep(0.1)
        pools.append(threading.current_thread().name.split("_")[0])

    hub.start("a", backing_off())
    wait_for("the second attempt", lambda: len(pools) == 2)
    assert pools == ["test-connect", "test-connect"]
    wait_for("the watch to end", lambda: not hub.running("a"))


def test_a_step_that_raises_ends_its_watch_only(hub: WatchHub) -> None:
    good, bad, seen = Pair(), Pair(), list[object]()

    def failing() -> Steps:
        yield Readable(bad.ours, 30)
        raise RuntimeError("the server said something we cannot parse")

    hub.start("good", reader(good, seen))
    hub.start("bad", failing())
    wait_for("both parked", lambda: hub.parked() == 2)
    bad.theirs.send(b"?")
    wait_for("the bad watch to end", lambda: not hub.running("bad"))
    good.theirs.send(b"ok")
    wait_for("the good watch's read", lambda: b"ok" in seen)
    assert hub.running("good")
    good.close()
    bad.close()


def test_a_watch_that_yields_what_the_hub_cannot_wait_for_ends_alone(hub: WatchHub) -> None:
    good, seen, ended = Pair(), list[object](), list[str]()

    def confused() -> Steps:
        try:
            yield "a socket, I think"  # type: ignore[misc]  # a programming error in a watch
        finally:
            ended.append("closed")

    hub.start("confused", confused())
    wait_for("the confused watch to be closed", lambda: ended == ["closed"])
    assert not hub.running("confused")
    hub.start("good", reader(good, seen))  # the selector thread still serves the others
    wait_for("the good watch parked", lambda: hub.parked() == 1)
    good.theirs.send(b"ok")
    wait_for("the good watch's read", lambda: b"ok" in seen)
    good.close()


def test_thousands_of_parked_watches_add_no_thread() -> None:
    hub = WatchHub(connects=4, holds=4, name="many")
    pairs = [Pair() for _ in range(2000)]
    seen: list[object] = []
    try:
        before = threading.active_count()
        for n, pair in enumerate(pairs):
            hub.start(n, reader(pair, seen))
        wait_for("every watch parked", lambda: hub.parked() == len(pairs), 20)
        assert threading.active_count() - before <= 4 + 4
        for pair in pairs[::100]:
            pair.theirs.send(b"x")
        wait_for("every write read", lambda: seen.count(b"x") == 20, 10)
    finally:
        hub.close(timeout=10)
        for pair in pairs:
            pair.close()
    assert seen.count("closed") == len(pairs)


def test_run_blocking_drives_the_same_steps_on_the_calling_thread() -> None:
    pair, seen, stop = Pair(), list[object](), threading.Event()
    thread = threading.Thread(target=run_blocking, args=(reader(pair, seen), stop), name="own")
    thread.start()
    pair.theirs.send(b"hello")
    wait_for("the read", lambda: b"hello" in seen)
    assert seen[0] == (True, "own")
    stop.set()
    thread.join(timeout=3)
    assert not thread.is_alive() and seen[-1] == "closed"
    pair.close()
