"""The `listener` process: holds IMAP IDLE and Exchange streaming subscriptions for its shard.

Each listener dyno owns the mailboxes with ``shard_of(id, N) == K`` (N =
`SIGHTLINE_LISTENER_SHARDS`, K from `SIGHTLINE_LISTENER_SHARD` or the dyno
number). IMAP IDLEs are steps on the process's `WatchHub` (`worker.watch_hub`):
between their short commands they wait on one selector thread, and at most
CONNECTS_AT_ONCE connections are set up at a time. An Exchange stream is read
by exchangelib on a thread of its own, STREAM_SETUPS_AT_ONCE of them setting up
at a time. On new mail a watch calls
`request_sync`, which queues at most one sync per mailbox; the sync itself
runs elsewhere. Every `REFRESH_SECONDS` the listener reloads its mailbox list,
starting watches for new mailboxes and stopping those removed, reconnected
(credentials changed) or disabled.

While a connection holds, the provider marks it live (`push_latency.LiveMarks`:
a Redis key that lapses without heartbeats, written for every connection in one
Redis call five times a second) and a new-mail push notes its time,
so syncs measure how late each server's push is (`worker.sync.push_latency`);
only a live push measured prompt spares a sync before a follow-up step
(`worker.sequences.freshness`).

A dropped connection is retried with exponential backoff (1 s … 5 min); refused
credentials end that mailbox's watch (the sync job marks it "needs
reconnect"). Exchange mailboxes get the same treatment with an EWS streaming
subscription (`ExchangeProvider.watch`: Subscribe + GetStreamingEvents, re-issued
before the server's connection timeout), live on each frame Exchange writes and
dropped when it falls silent (`worker.sync.exchange_stream`). Gmail and Microsoft
365 push to `web`; they need no listener.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import redis
from sqlalchemy import select

from config import get_settings
from config.logging import configure_logging
from core.crypto import CredentialsError, decrypt_json
from core.db import session_scope
from core.models import Mailbox, MailboxKind, MailboxStatus
from core.redis import get_redis
from worker.sync import push_latency
from worker.sync.base import MailboxProvider, ProviderError
from worker.sync.engine import request_sync
from worker.sync.folders import with_skip_folders
from worker.sync.imap import ImapProvider
from worker.sync.registry import open_provider
from worker.sync.watch_steps import Sleep, Steps, run_blocking
from worker.watch_hub import WatchHub

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30
# The mailbox kinds whose push a listener holds (the others push to `web`).
WATCHED_KINDS = [MailboxKind.IMAP, MailboxKind.EXCHANGE]
# Held as steps on the hub; the others (EWS: exchangelib reads its stream) on a thread each.
STEPPED_KINDS = frozenset({MailboxKind.IMAP})
MAX_BACKOFF_SECONDS = 300
HEARTBEAT_KEY = "sightline:listener:{shard}"
# Published when a mailbox is connected or changed, so IDLE starts at once.
REFRESH_CHANNEL = "sightline:listener:refresh"
# Connections being set up at once (connect, log in, select, IDLE) per process: the
# hub's connect pool. Started all at once, 10,000 logins queued for the GIL and at
# Dovecot, whose login queue overflowed ("Internal login failure").
CONNECTS_AT_ONCE = 32
# Exchange streams being set up at once (FindFolder, Subscribe, the first answer to
# GetStreamingEvents), each on its thread: 10,000 started together held 1,944 after
# 243 s and 10,000 only after 450 s (bench.providers_scale --mode ews), every thread
# queued for the GIL; a stream that holds waits on its socket and needs no turn.
STREAM_SETUPS_AT_ONCE = 32
# Threads serving held IDLEs' rounds (DONE, IDLE, reading what the server said): a
# round's waits are yielded, so these only run its work (~1 ms of CPU).
HOLD_THREADS = 8
# How long a stopping listener waits for its watches to log out.
STOP_WAIT_SECONDS = 5.0


def announce_mailbox_change() -> None:
    """Wake every listener to reload its mailboxes now rather than within 30 s."""
    get_redis().publish(REFRESH_CHANNEL, b"1")


def shard_of(mailbox_id: int, shards: int) -> int:
    """Stable across processes and restarts (unlike Python's salted hash())."""
    return zlib.crc32(str(mailbox_id).encode()) % shards


def _on_new_mail(mailbox_id: int) -> None:
    # pushed: the sync measures how late this push was (worker.sync.push_latency).
    queued = request_sync(mailbox_id, pushed=True)
    log.debug("idle_new_mail mailbox_id=%s queued=%s", mailbox_id, queued)


# How a watch holds its provider's push: (provider, on_change) -> steps.
Hold = Callable[[MailboxProvider, Callable[[], None]], Steps]


def _hold_steps(provider: MailboxProvider, on_change: Callable[[], None]) -> Steps:
    assert isinstance(provider, ImapProvider)
    return provider.watch_steps(on_change)


def _hold_on_thread(stop: threading.Event, setups: threading.Semaphore) -> Hold:
    """A provider whose `watch` blocks: one step that holds this thread until `stop`.
    Its set-up waits for one of `setups`, given back once the push connection is
    open (`push_open`) or the watch ended."""

    def hold(provider: MailboxProvider, on_change: Callable[[], None]) -> Steps:
        # Blocking, not timed: thousands wait here at a listener's start, and a timed
        # wait wakes each of them every time it lapses (and each lapse walks the
        # semaphore's list of waiters): 4,600 waiters took the listener's whole core
        # and no stream set up. A watch stopped meanwhile gives its turn straight back.
        setups.acquire()
        if stop.is_set():
            setups.release()
            return
        held = True

        def opened() -> None:  # called on this thread only: no lock needed
            nonlocal held
            if held:
                held = False
                setups.release()

        provider.push_open = opened
        try:
            provider.watch(stop, on_change)
        finally:
            opened()
        return
        yield  # a generator: the watch's steps

    return hold


def _watch_mailbox(
    mailbox_id: int,
    kind: str,
    email: str,
    credentials: dict[str, Any],
    hold: Hold,
    marks: push_latency.LiveMarks,
) -> Steps:
    """One mailbox's watch, as steps: connect, hold, reconnect after a back-off."""
    backoff = 1.0
    while True:
        try:
            provider = open_provider(kind, email, credentials)
        except ProviderError as exc:
            log.warning("watch_stopped mailbox_id=%s reason=%s", mailbox_id, exc)
            return
        # The connection marks itself live while it holds; freshness trusts only that.
        provider.push_alive = lambda: marks.mark(mailbox_id)
        wait = 0.0
        try:
            # Whatever arrived while we were not idling is caught up first.
            request_sync(mailbox_id)
            yield from hold(provider, lambda: _on_new_mail(mailbox_id))
            backoff = 1.0
        except ProviderError as exc:
            if exc.needs_reconnect or exc.permanent:
                log.warning("idle_stopped mailbox_id=%s reason=%s", mailbox_id, exc)
                request_sync(mailbox_id)  # the sync records the mailbox's status
                return
            wait = max(backoff, exc.retry_after or 0.0)  # e.g. EWS ErrorServerBusy
            log.info("idle_reconnect mailbox_id=%s in=%.0fs reason=%s", mailbox_id, wait, exc)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        finally:
            marks.clear(mailbox_id)
            provider.close()
        yield Sleep(wait)


@dataclass
class _Thread:
    """A watch on a thread of its own (an Exchange stream)."""

    thread: threading.Thread
    stop: threading.Event


@dataclass(frozen=True)
class _Wanted:
    """A mailbox the listener should watch, as `refresh` read it."""

    kind: str
    email: str
    credentials_encrypted: str
    skip_folders: list[str] | None
    fingerprint: str


@dataclass
class _Watch:
    fingerprint: str
    on_thread: _Thread | None  # None: the watch is steps on the hub


class Listener:
    def __init__(self, shard: int, shards: int) -> None:
        self.shard = shard
        self.shards = shards
        self.watches: dict[int, _Watch] = {}
        self.stopping = threading.Event()
        self._stop_asked = False
        self.hub = WatchHub(connects=CONNECTS_AT_ONCE, holds=HOLD_THREADS, name="idle")
        self.marks = push_latency.LiveMarks()
        self.setups = threading.BoundedSemaphore(STREAM_SETUPS_AT_ONCE)

    def _start(
        self, mailbox_id: int, kind: str, email: str, credentials: dict[str, Any], fingerprint: str
    ) -> _Watch:
        if kind in STEPPED_KINDS:
            self.hub.start(
                mailbox_id,
                _watch_mailbox(mailbox_id, kind, email, credentials, _hold_steps, self.marks),
            )
            return _Watch(fingerprint, None)
        stop = threading.Event()
        hold = _hold_on_thread(stop, self.setups)
        steps = _watch_mailbox(mailbox_id, kind, email, credentials, hold, self.marks)
        thread = threading.Thread(
            target=run_blocking, args=(steps, stop), name=f"watch-{kind}-{mailbox_id}", daemon=True
        )
        thread.start()
        return _Watch(fingerprint, _Thread(thread, stop))

    def _alive(self, mailbox_id: int, watch: _Watch) -> bool:
        if watch.on_thread is None:
            return self.hub.running(mailbox_id)
        return watch.on_thread.thread.is_alive()

    def _end(self, mailbox_id: int, watch: _Watch) -> None:
        if watch.on_thread is None:
            self.hub.stop(mailbox_id)
        else:
            watch.on_thread.stop.set()

    def refresh(self) -> None:
        """Start a watch for each of this shard's active mailboxes, end the others'.

        Every 30 s over every mailbox, so it reads the columns it needs, not
        ORM objects, and decrypts credentials only for a watch it starts (a
        fingerprint of the stored ciphertext says whether they changed): at
        10,000 mailboxes, loading and decrypting all of them was a sixth of the
        listener's CPU.
        """
        wanted: dict[int, _Wanted] = {}
        with session_scope() as session:
            rows = session.execute(
                select(
                    Mailbox.id,
                    Mailbox.kind,
                    Mailbox.email,
                    Mailbox.credentials_encrypted,
                    Mailbox.skip_folders,
                ).where(Mailbox.kind.in_(WATCHED_KINDS), Mailbox.status == MailboxStatus.ACTIVE)
            )
            for mailbox_id, kind, email, encrypted, skip_folders in rows:
                if shard_of(mailbox_id, self.shards) != self.shard:
                    continue
                # New credentials or other folders skipped: the watch starts again.
                watched = f"{encrypted}|{json.dumps(skip_folders)}"
                fingerprint = hashlib.sha256(watched.encode()).hexdigest()
                wanted[mailbox_id] = _Wanted(kind, email, encrypted, skip_folders, fingerprint)
        for mailbox_id, watch in list(self.watches.items()):
            gone = mailbox_id not in wanted or wanted[mailbox_id].fingerprint != watch.fingerprint
            if gone or not self._alive(mailbox_id, watch):
                self._end(mailbox_id, watch)
                del self.watches[mailbox_id]
        for mailbox_id, mailbox in wanted.items():
            if mailbox_id in self.watches:
                continue
            try:
                credentials = decrypt_json(mailbox.credentials_encrypted)
            except CredentialsError as exc:
                log.error("listener_credentials mailbox_id=%s error=%s", mailbox_id, exc)
                continue
            credentials = with_skip_folders(credentials, mailbox.skip_folders)
            self.watches[mailbox_id] = self._start(
                mailbox_id, mailbox.kind, mailbox.email, credentials, mailbox.fingerprint
            )
        get_redis().set(
            HEARTBEAT_KEY.format(shard=self.shard), len(self.watches), ex=REFRESH_SECONDS * 3
        )

    def run(self) -> None:
        log.info("listener_start shard=%s shards=%s", self.shard, self.shards)
        pubsub = get_redis().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(REFRESH_CHANNEL)
        while not self.stopping.is_set():
            try:
                self.refresh()
            except Exception:
                log.exception("listener_refresh_failed shard=%s", self.shard)
            self._wait_for_change(pubsub)
        self.stop_watches()
        log.info("listener_stop shard=%s", self.shard)

    def stop_watches(self) -> None:
        """Ask every watch to stop, then wait for them (STOP_WAIT_SECONDS in all)."""
        threads = [w.on_thread for w in self.watches.values() if w.on_thread is not None]
        for held in threads:
            held.stop.set()
        self.hub.close(timeout=STOP_WAIT_SECONDS)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for held in threads:
            held.thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self.marks.close()

    def _wait_for_change(self, pubsub: redis.client.PubSub) -> None:
        """Sleep until a mailbox changes, the refresh interval passes, or we stop."""
        deadline = time.monotonic() + REFRESH_SECONDS
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                if pubsub.get_message(timeout=1.0) is not None:
                    return
            except (redis.RedisError, OSError) as exc:
                log.warning("listener_pubsub_error error=%s", exc)
                time.sleep(1.0)  # not stopping.wait: its lock is the signal handler's (stop)

    def stop(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        """Ask the listener to stop; safe to call from a signal handler, again and again.

        A second SIGTERM landing while the first handler is inside `Event.set` used
        to run a nested handler that waited for the lock the first one held: the
        listener hung until SIGKILL, its IDLEs held and its live marks kept. The
        flag lets only the first call near the lock.
        """
        if self._stop_asked:
            return
        self._stop_asked = True
        self.stopping.set()


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    listener = Listener(settings.listener_shard, settings.listener_shards)
    signal.signal(signal.SIGTERM, listener.stop)
    signal.signal(signal.SIGINT, listener.stop)
    listener.run()


if __name__ == "__main__":
    main()
