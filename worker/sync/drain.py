"""The `sync` process: takes the mailboxes that want a sync many at a time and syncs them.

    python -m worker.sync.drain [--threads 8] [--lease-seconds 30] [--burst]

One loop, a pool of threads::

    round: acknowledge what finished (one XACK + XDEL for all of them)
           every ~0.5 s: promote due delayed syncs (back-off, busy)
           every 5 min (and at start): a stream entry for any waiting id without one
           every lease/3: renew the entries in hand; take over a dead drainer's
           claim up to twice its threads in hand, a thread-count at a time or whenever
           a thread would wait (XREADGROUP, blocking ≤ 1 s when idle)
           ──▶ each to a thread: engine.sync_now(id, lock_wait=0)
                   done / backoff / throttled / busy (asked again in 1 s)
                   a transient provider error or a bug: logged, asked again later

Why not an RQ job per push: a push sync is a few ms of CPU, and RQ's per-job
bookkeeping (the job hash, registries, heartbeats, the result) was ~40 % of it
(`python -m bench.sync_cpu --profile`). Here the per-sync Redis work is the
claim's and the acknowledgement's share of a batch. Why threads: a sync waits on
its provider (a Gmail or Graph round trip is 50-200 ms in production) far longer
than it computes; eight threads keep a core busy where one would idle. Two
syncs of one mailbox never overlap: `engine.mailbox_lock`, taken without
waiting, and a mailbox found busy is asked again rather than waited for (a
waiting thread would hold up its batch).

Nothing is lost if the process dies: an entry is acknowledged only after its
sync returned, and a dead drainer's entries come back to another after
`--lease-seconds` (`worker.sync.wanted`). On SIGTERM (a dyno restart) no new
entries are claimed and the ones in hand finish, for up to `STOP_GRACE_SECONDS`.
RQ's job timeout (SIGALRM) would reach only the main thread, so a sync has a
deadline of its own instead (`engine.sync_now`, SIGHTLINE_SYNC_DEADLINE_SECONDS):
its connections to the team's server are shut down when it passes
(core.outbound_deadline), and a server answering a byte at a time cannot hold
a thread; classification has its own budget.
"""

from __future__ import annotations

import argparse
import gc
import logging
import queue
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

from config import get_settings
from config.logging import configure_logging
from core.db import get_engine, size_pool
from core.redis import get_redis
from worker.sync import wanted
from worker.sync.base import ProviderError
from worker.sync.engine import request_sync, sync_now

log = logging.getLogger(__name__)

DEFAULT_THREADS = 8
PROMOTE_EVERY_SECONDS = 0.5
# A sync that failed in a way a retry may cure (a provider timing out, a database
# restart) is asked again after this; the poll is the backstop beyond it.
RETRY_SECONDS = 30.0
STOP_GRACE_SECONDS = 25.0
# A drainer marks itself alive at most once a second, for a few seconds.
ALIVE_KEY = "sightline:sync:drainer_alive"
ALIVE_SECONDS = 5
# How long `drain_tick` (in `worker`, where no drainer runs) syncs before it gives
# the rest to the next tick.
TICK_BUDGET_SECONDS = 20.0
IDLE_BLOCK_MS = 1000
BUSY_BLOCK_MS = 50
# A drainer holds up to this many entries per thread: each thread's next one waits
# in hand, so a busy drainer claims (XREADGROUP + SREM) and acknowledges (XACK +
# XDEL) a thread-count at a time, not one entry per finished sync. An entry in hand
# is renewed like a running one; on SIGTERM the ones in hand finish in the grace.
HELD_PER_THREAD = 2
# How often a drainer gives stranded sync requests their stream entry back (and at start).
REQUEUE_EVERY_SECONDS = 300.0


class Drainer:
    """Claims sync requests and runs them on a thread pool; see the module docstring."""

    def __init__(
        self,
        *,
        threads: int = DEFAULT_THREADS,
        lease_seconds: float = wanted.LEASE_SECONDS,
        name: str | None = None,
    ) -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self.threads = threads
        self.lease_seconds = lease_seconds
        self.consumer = wanted.Consumer(name or wanted.consumer_name(), lease_seconds=lease_seconds)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="sync")
        self.in_hand: dict[str, wanted.Claimed] = {}
        self.finished: queue.SimpleQueue[wanted.Claimed] = queue.SimpleQueue()
        self.stopping = threading.Event()
        self.synced = 0
        self._next_promote = 0.0
        self._next_lease = 0.0
        self._next_requeue = 0.0

    def run(self, *, burst: bool = False) -> int:
        """Drain until stopped (or, with `burst`, until nothing waits). Returns syncs run."""
        log.info(
            "sync_drainer_start consumer=%s threads=%s lease_seconds=%s",
            self.consumer.name,
            self.threads,
            self.lease_seconds,
        )
        while not self.stopping.is_set():
            claimed = self.round()
            if burst and not claimed and not self.in_hand and not wanted.waiting():
                break
        self._finish()
        log.info("sync_drainer_stop consumer=%s synced=%s", self.consumer.name, self.synced)
        return self.synced

    def round(self) -> int:
        """One pass of the loop. Returns how many entries it claimed."""
        self._settle()
        now = time.monotonic()
        if now >= self._next_promote:
            self.consumer.redis.set(ALIVE_KEY, self.consumer.name, ex=ALIVE_SECONDS)
            wanted.promote_due(self.consumer.redis)
            self._next_promote = now + PROMOTE_EVERY_SECONDS
        if now >= self._next_requeue:
            if requeued := wanted.requeue_stranded(self.consumer.redis):
                log.warning("sync_requests_requeued mailboxes=%s", requeued)
            self._next_requeue = now + REQUEUE_EVERY_SECONDS
        claimed: list[wanted.Claimed] = []
        most = self.threads * HELD_PER_THREAD
        if now >= self._next_lease:
            self.consumer.renew(list(self.in_hand.values()))
            claimed += self.consumer.take_over(max(most - len(self.in_hand), 1))
            self._next_lease = now + self.lease_seconds / 3
        held = len(self.in_hand) + len(claimed)
        room = most - held
        # Claim when a thread would otherwise wait, or a thread-count fits: batches.
        if room > 0 and (held < self.threads or room >= self.threads):
            block = BUSY_BLOCK_MS if held else IDLE_BLOCK_MS
            claimed += self.consumer.claim(room, block)
        elif not claimed:
            self._wait_for_a_thread()
        for entry in claimed:
            self.in_hand[entry.entry_id] = entry
            self.pool.submit(self._sync, entry)
        return len(claimed)

    def _sync(self, entry: wanted.Claimed) -> None:
        try:
            sync_entry(entry.mailbox_id, lease=self.lease_seconds)
        finally:
            self.finished.put(entry)

    def _settle(self) -> None:
        done: list[wanted.Claimed] = []
        while True:
            try:
                done.append(self.finished.get_nowait())
            except queue.Empty:
                break
        if done:
            self.consumer.done(done)
            for entry in done:
                self.in_hand.pop(entry.entry_id, None)
            self.synced += len(done)

    def _wait_for_a_thread(self) -> None:
        try:
            entry = self.finished.get(timeout=BUSY_BLOCK_MS / 1000)
        except queue.Empty:
            return
        self.finished.put(entry)  # settled by the next round, with the others

    def _finish(self) -> None:
        """Let the syncs in hand finish (up to the grace period), acknowledging them."""
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while self.in_hand and time.monotonic() < deadline:
            self._wait_for_a_thread()
            self._settle()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self.in_hand:
            log.warning(
                "sync_drainer_unfinished consumer=%s mailboxes=%s (another drainer takes them)",
                self.consumer.name,
                ",".join(str(e.mailbox_id) for e in self.in_hand.values()),
            )

    def stop(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        self.stopping.set()


def sync_entry(mailbox_id: int, *, lease: float = wanted.LEASE_SECONDS) -> None:
    """Sync one claimed mailbox; a failure is logged and the sync asked for again later.

    `lease` is also the mailbox lock's: a drainer that dies leaves its claims and
    its locks for the same time.
    """
    try:
        result = sync_now(mailbox_id, lock_wait=0, lease=lease)
        log.debug("sync_drained mailbox_id=%s status=%s", mailbox_id, result["status"])
    except ProviderError as exc:
        log.warning(
            "sync_failed mailbox_id=%s retry_in=%.0fs error=%s", mailbox_id, RETRY_SECONDS, exc
        )
        request_sync(mailbox_id, delay=RETRY_SECONDS)
    except Exception:
        log.exception("sync_failed mailbox_id=%s retry_in=%.0fs", mailbox_id, RETRY_SECONDS)
        request_sync(mailbox_id, delay=RETRY_SECONDS)


def drain_waiting(max_seconds: float | None = None) -> int:
    """Sync every mailbox that waits now, one by one in this thread; returns how many.

    What a `sync` process does with the same entries, without its threads: for
    `drain_tick`, and for tests (which read what the sync did right after).
    `max_seconds`: stop claiming after this long (the rest wait for the next).
    """
    consumer = wanted.Consumer(wanted.consumer_name())
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    synced = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            entries = consumer.claim(10, None)
            if not entries:
                break
            for entry in entries:
                try:
                    sync_entry(entry.mailbox_id)
                finally:
                    consumer.done([entry])
                synced += 1
    finally:
        consumer.redis.xgroup_delconsumer(wanted.STREAM_KEY, wanted.GROUP, consumer.name)
    return synced


def drain_tick() -> int:
    """Cron, on the sync queue: where no `sync` process runs, `worker` drains the requests.

    A formation without a `sync` dyno (or a test stack without one) still syncs,
    a tick later. While a drainer is alive (its mark in Redis) this does nothing.
    """
    if get_redis().exists(ALIVE_KEY):
        return 0
    return drain_waiting(max_seconds=TICK_BUDGET_SECONDS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--lease-seconds", type=float, default=wanted.LEASE_SECONDS)
    parser.add_argument("--burst", action="store_true", help="exit once nothing waits")
    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(settings)
    get_redis()
    size_pool(args.threads)  # a connection kept for each sync thread: none opened per sync
    get_engine()
    gc.freeze()  # what start-up built stays put: fewer objects for each collection to walk
    drainer = Drainer(threads=args.threads, lease_seconds=args.lease_seconds)
    signal.signal(signal.SIGTERM, drainer.stop)
    signal.signal(signal.SIGINT, drainer.stop)
    drainer.run(burst=args.burst)


if __name__ == "__main__":
    main()
