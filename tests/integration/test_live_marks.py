"""The listener's live marks, written in batches (`push_latency.LiveMarks`), on real Redis.

A mark says a mailbox's IDLE or stream holds; freshness spares a sync on its word.
Batched, it must still say what `mark_live` said (the first mark's moment kept,
the key's life extended by each) and must never outlive its `clear`: a mark noted
before a connection dropped and written after the drop would call a dead
connection live for LIVE_TTL_SECONDS.
"""

from __future__ import annotations

import threading
import time

from config import Settings
from core.redis import get_redis
from worker.sync import push_latency
from worker.sync.push_latency import LIVE_KEY, LIVE_TTL_SECONDS, LiveMarks


def live(mailbox_id: int) -> bytes | None:
    value = get_redis().get(LIVE_KEY.format(mailbox_id=mailbox_id))
    assert value is None or isinstance(value, bytes)
    return value


def test_marks_land_in_batches_and_keep_the_first_moment(env: Settings) -> None:
    marks = LiveMarks(every=0.05)
    try:
        marks.mark(1)
        marks.mark(2)
        deadline = time.monotonic() + 5
        while (live(1) is None or live(2) is None) and time.monotonic() < deadline:
            time.sleep(0.01)
        first = live(1)
        assert first is not None and live(2) is not None
        since = push_latency.live_since(1)
        assert since is not None and abs(since.timestamp() - time.time()) < 5

        get_redis().expire(LIVE_KEY.format(mailbox_id=1), 5)
        marks.mark(1)  # a heartbeat: the key lives on, its moment stays
        marks.flush()
        assert live(1) == first
        ttl = get_redis().ttl(LIVE_KEY.format(mailbox_id=1))
        assert isinstance(ttl, int) and ttl > LIVE_TTL_SECONDS - 5
    finally:
        marks.close()


def test_a_mark_cleared_before_its_write_never_lands(env: Settings) -> None:
    marks = LiveMarks(every=3600)  # written only by flush() here
    try:
        marks.mark(7)
        marks.mark(8)
        assert live(8) is None  # noted, not yet written
        marks.clear(7)
        marks.flush()
        assert live(7) is None and live(8) is not None
        marks.clear(8)
        assert live(8) is None
    finally:
        marks.close()


def test_no_mark_outlives_its_clear_while_the_writer_runs(env: Settings) -> None:
    # 2,000 connections come up and drop while the writer writes every millisecond:
    # each is marked, lives about as long as a write takes, and is cleared. A write
    # that took a mark before its clear and landed after it would leave the key.
    marks = LiveMarks(every=0.001)
    ids = list(range(1000, 3000))

    def watches(mine: list[int]) -> None:
        for mailbox_id in mine:
            marks.mark(mailbox_id)
            time.sleep(0.0005)
            marks.clear(mailbox_id)

    threads = [threading.Thread(target=watches, args=(ids[n::16],)) for n in range(16)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        time.sleep(0.05)  # several more writes
        left = get_redis().mget([LIVE_KEY.format(mailbox_id=i) for i in ids])
        assert [i for i, value in zip(ids, left, strict=True) if value is not None] == []
    finally:
        marks.close()


def test_close_stops_writing(env: Settings) -> None:
    marks = LiveMarks(every=0.01)
    marks.close()
    marks.mark(3)
    time.sleep(0.1)
    assert live(3) is None


def test_a_write_of_more_marks_than_one_call_takes_lands_every_one(env: Settings) -> None:
    # A listener's start marks thousands at once: written in several calls, each
    # key set once (its moment kept by later marks) and given the whole life.
    marks = LiveMarks(every=3600)
    ids = list(range(5000, 5000 + 2 * push_latency.MARKS_PER_CALL + 7))
    try:
        get_redis().set(LIVE_KEY.format(mailbox_id=ids[-1]), b"12.000", ex=5)
        for mailbox_id in ids:
            marks.mark(mailbox_id)
        marks.flush()
        keys = [LIVE_KEY.format(mailbox_id=i) for i in ids]
        values = get_redis().mget(keys)
        assert [i for i, v in zip(ids, values, strict=True) if v is None] == []
        assert values[-1] == b"12.000"  # already live: its moment stays
        with get_redis().pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.ttl(key)
            lives = pipe.execute()
        assert min(lives) > LIVE_TTL_SECONDS - 5
    finally:
        for mailbox_id in ids:
            marks.clear(mailbox_id)
        marks.close()
