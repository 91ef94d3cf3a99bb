"""Mailbox sync: drive a provider from the stored cursor, handle what matches.

One sync per mailbox at a time: a Redis lock held as a lease, renewed by a
thread while the sync runs, so a worker killed mid-sync frees its mailbox
within `LOCK_LEASE_SECONDS`. A burst of pushes queues one sync, and a push
during a running sync queues exactly one more (`worker.sync.wanted`: a set that
de-duplicates, a stream the `sync` processes drain many at a time)::

    push/poll ──request_sync──▶ wanted.want(id): waiting already?  no: one entry
                                                                   yes: nothing
    drainer (worker.sync.drain): claim many ─▶ per mailbox sync_now: lock? ─▶ sync
        lock held by another sync ─▶ asked again in BUSY_RETRY_SECONDS

Per batch: one lookup of every candidate Message-ID and one of every provider
thread id (plus, on IMAP, a subject lookup per message naming no Message-ID:
`worker.matching.threads`); only a match (or a likely
bounce/complaint/auto-reply) is fetched whole and handled in its own
transaction, its classification under a time budget (SIGHTLINE_CLASSIFY_BUDGET_MS);
a message over budget or that fails to parse is quarantined and the sync goes
on; the batch's cursor is saved last. A crash re-lists the batch; the natural
keys make that harmless. After the batches, up to `RETRIES_PER_SYNC`
quarantined messages whose next try is due are fetched and handled again
(`worker.sync.quarantine`).

RQ's job timeout (`rq.timeouts.JobTimeoutException`, an `Exception` delivered by
SIGALRM wherever the job is) is never caught here: the job fails, the batch's
cursor is not saved, and the next sync reads the message again within its
classification budget. Catching it would record a message that was never
read and let the job run on past its limit.

Throttling is per mailbox: a `ProviderError` with `retry_after` (Gmail quota,
Graph 429, EWS ErrorServerBusy) sets a back-off key for that mailbox only and
schedules its next sync for then (`wanted.want_later`); a push during the wait
finds the key and schedules again::

    sync_now ─▶ back-off key set? ── yes ─▶ schedule sync at its end, return
             │ no
             ▼
           sync ── ProviderError(retry_after=s) ─▶ key for s seconds, sync scheduled in s
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from redis.exceptions import LockError
from rq.timeouts import BaseTimeoutException

from config import get_settings
from core import outbound_deadline
from core.crypto import CredentialsError, decrypt_json
from core.db import read_scope, session_scope
from core.models import MailboxStatus, utcnow
from core.redis import get_redis
from worker.matching.matcher import find_sent_messages, may_be_report
from worker.queueing import job_started
from worker.sync import push_latency, wanted
from worker.sync import quarantine as held
from worker.sync.base import ChangeBatch, HeaderSummary, MailboxProvider, ProviderError
from worker.sync.credentials import credential_saver
from worker.sync.folders import LISTING_KINDS, with_skip_folders, without_listing
from worker.sync.inbound import (
    MailboxRef,
    answers_without_references,
    handle_inbound,
    quarantine,
)
from worker.sync.lease import RENEWER
from worker.sync.mailbox_rows import load, save_cursor, set_status
from worker.sync.mime import summarize_headers
from worker.sync.registry import open_provider
from worker.sync.sent_mail import recognise_sent, sent_wanted

log = logging.getLogger(__name__)

LOCK_KEY = "sightline:sync:lock:{mailbox_id}"
# The lock is a lease renewed every third of it while the sync runs. It used to be
# one 15-minute lock (as long as the longest sync): the chaos run SIGKILLed a
# worker mid-sync and that mailbox's replies went unrecorded for 15 minutes, while
# every sync of it held a worker for LOCK_WAIT_SECONDS and said "busy".
LOCK_LEASE_SECONDS = 30.0
LOCK_WAIT_SECONDS = 20
BACKOFF_KEY = "sightline:sync:backoff:{mailbox_id}"
# Set by `request_sync(list_folders=True)`, taken by the next sync of the mailbox.
# It outlives a backlog of syncs; if it does not, the step asks again next tick.
LIST_KEY = "sightline:sync:list:{mailbox_id}"
LIST_WANTED_SECONDS = 3600
MIN_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 3600.0
# A sync whose server was still answering when its deadline (SIGHTLINE_SYNC_DEADLINE_SECONDS,
# core.outbound_deadline) cut it off: the mailbox waits this long before the next one, so
# a team's slow or hostile server holds a `sync` thread for at most a deadline per wait.
SLOW_SERVER_BACKOFF_SECONDS = 900.0
# The RQ job a sync used to be, one per push. Still served (by `worker` on the sync
# queue) for jobs queued before the drainers, and for a sync run as a job by hand.
SYNC_JOB = "worker.sync.engine.sync_mailbox_job"
# A mailbox another process is syncing is asked again this much later: the sync
# in progress may have begun before the push that asked for this one.
BUSY_RETRY_SECONDS = 1.0


class SlowServerError(Exception):
    """The sync's deadline cut its connections off while the server was still answering."""


@dataclass
class SyncStats:
    listed: int = 0
    fetched: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def request_sync(
    mailbox_id: int,
    *,
    delay: float | None = None,
    pushed: bool = False,
    list_folders: bool = False,
) -> bool:
    """Ask for a sync of the mailbox unless one is already waiting. True if queued.

    With `delay` (seconds) the sync is scheduled for later (a provider asked us
    to back off). `pushed`: a push (IDLE, a webhook) said new mail is here; the
    sync measures how late it was (`worker.sync.push_latency`). `list_folders`:
    the next sync lists the folders again whatever its kept list's age (a step
    waits for a list made after it fell due: worker.sequences.freshness). One
    Redis round trip either way: this is most of what a push endpoint does.
    """
    if delay is not None and delay > 0:
        if pushed:
            push_latency.note_push(mailbox_id)
        if list_folders:
            _want_listing(get_redis(), mailbox_id)
        return wanted.want_later(mailbox_id, delay)
    with get_redis().pipeline(transaction=False) as pipe:
        if pushed:
            push_latency.note_push(mailbox_id, redis=pipe)
        if list_folders:
            _want_listing(pipe, mailbox_id)
        wanted.want(mailbox_id, redis=pipe)
        return bool(pipe.execute()[-1])


def _want_listing(redis: Any, mailbox_id: int) -> None:
    redis.set(LIST_KEY.format(mailbox_id=mailbox_id), 1, ex=LIST_WANTED_SECONDS)


def _take_push_and_listing(mailbox_id: int) -> tuple[float | None, bool]:
    """(the earliest push no sync took yet, whether a list was asked for), both taken."""
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.getdel(push_latency.PUSHED_KEY.format(mailbox_id=mailbox_id))
        pipe.getdel(LIST_KEY.format(mailbox_id=mailbox_id))
        pushed, listing = pipe.execute()
    taken = push_latency.as_time(pushed)
    return (taken.timestamp() if taken is not None else None), listing is not None


def backoff_remaining(mailbox_id: int) -> float:
    """Seconds until the provider lets this mailbox be synced again (0: now)."""
    ttl = get_redis().pttl(BACKOFF_KEY.format(mailbox_id=mailbox_id))
    return ttl / 1000 if isinstance(ttl, int) and ttl > 0 else 0.0


def back_off(
    mailbox_id: int,
    seconds: float,
    reason: str,
    *,
    status: MailboxStatus = MailboxStatus.ACTIVE,
    what: str = "throttled by the provider",
) -> float:
    """Hold this mailbox's syncs for `seconds` (clamped) and schedule the one that follows.

    Only this mailbox waits: the provider's quota is per user, and so is ours.
    The wait shows in the mailbox's status reason until a sync succeeds.
    """
    wait = min(max(seconds, MIN_BACKOFF_SECONDS), MAX_BACKOFF_SECONDS)
    get_redis().set(BACKOFF_KEY.format(mailbox_id=mailbox_id), 1, px=int(wait * 1000))
    until = utcnow() + timedelta(seconds=wait)
    set_status(mailbox_id, status, f"{what}; next sync after {until:%H:%M:%S} UTC ({reason})")
    request_sync(mailbox_id, delay=wait)
    log.warning("sync_backoff mailbox_id=%s seconds=%.1f reason=%s", mailbox_id, wait, reason)
    return wait


def sync_mailbox_job(mailbox_id: int) -> dict[str, object]:
    """RQ entry point: sync one mailbox. Returns counts (for logs and tests)."""
    job_started(f"sync:{mailbox_id}")
    return sync_now(mailbox_id)


def sync_now(
    mailbox_id: int,
    *,
    lock_wait: float | None = None,
    lease: float | None = None,
) -> dict[str, object]:
    """Sync one mailbox unless it is backed off or another sync holds it. Returns counts.

    What the drainers and the RQ job share. `lock_wait`: how long to wait for a
    sync of this mailbox running elsewhere (a drainer waits not at all: it asks
    again in `BUSY_RETRY_SECONDS` and goes on with its batch). `lease`: the
    mailbox lock's lease (`mailbox_lock`).
    """
    waiting = backoff_remaining(mailbox_id)
    if waiting > 0:
        # A push arrived while the provider wants us to wait: come back then.
        request_sync(mailbox_id, delay=waiting)
        return {"status": "backoff", "retry_in": round(waiting, 1)}
    with mailbox_lock(mailbox_id, wait=lock_wait, lease=lease) as locked:
        if not locked:
            # Another sync of this mailbox is running; make sure one follows it.
            log.info("sync_busy mailbox_id=%s", mailbox_id)
            request_sync(mailbox_id, delay=BUSY_RETRY_SECONDS)
            return {"status": "busy"}
        seconds = get_settings().sync_deadline_seconds
        try:
            # Limits the connections to the mail server, not the lock's or the database's.
            with outbound_deadline.deadline(seconds):
                stats = sync_mailbox(mailbox_id)
        except SlowServerError:
            wait = back_off(
                mailbox_id,
                SLOW_SERVER_BACKOFF_SECONDS,
                f"a sync may hold the server's connections for {seconds} s",
                status=MailboxStatus.ERROR,
                what="the server was still answering when the sync's time was up",
            )
            return {"status": "too_slow", "retry_in": round(wait, 1)}
        except ProviderError as exc:
            if exc.retry_after is None:
                raise
            wait = back_off(mailbox_id, exc.retry_after, str(exc))
            return {"status": "throttled", "retry_in": round(wait, 1)}
    return {"status": "done", "listed": stats.listed, "fetched": stats.fetched, **stats.outcomes}


@contextmanager
def mailbox_lock(
    mailbox_id: int, *, wait: float | None = None, lease: float | None = None
) -> Iterator[bool]:
    """Hold the mailbox's sync lock for the block; yield False if another sync has it.

    Waits up to `wait` seconds for it (0: not at all; default `LOCK_WAIT_SECONDS`).
    While the block runs the process's lease renewer (`worker.sync.lease`) renews
    it every third of `lease` (default `LOCK_LEASE_SECONDS`), so a sync may take
    as long as it needs; a process that dies leaves the lock for at most `lease`.
    """
    wait = LOCK_WAIT_SECONDS if wait is None else wait
    lease = LOCK_LEASE_SECONDS if lease is None else lease
    # thread_local=False: the token must be visible to the renewing thread.
    lock = get_redis().lock(
        LOCK_KEY.format(mailbox_id=mailbox_id), timeout=lease, thread_local=False
    )
    if not lock.acquire(blocking=wait > 0, blocking_timeout=wait if wait > 0 else None):
        yield False
        return
    renewing = RENEWER.hold(lock, mailbox_id, lease)
    try:
        yield True
    finally:
        RENEWER.drop(renewing)
        try:
            lock.release()
        except LockError:  # the lease lapsed (Redis lost it); the cursor guards the work
            log.warning("sync_lock_lost mailbox_id=%s", mailbox_id)


def sync_mailbox(mailbox_id: int) -> SyncStats:
    """Sync one mailbox from its cursor. The caller holds the mailbox's lock.

    Raises:
        ProviderError: a transient provider failure (the job is retried), or one
            with `retry_after` (the job backs this mailbox off instead).
    """
    stats = SyncStats()
    mailbox = load(mailbox_id)
    if mailbox is None or mailbox.status in (
        MailboxStatus.NEEDS_RECONNECT,
        MailboxStatus.DISABLED,
    ):
        return stats
    ref = MailboxRef(id=mailbox.id, team_id=mailbox.team_id, email=mailbox.email)
    kind, cursor, since = mailbox.kind, mailbox.sync_cursor, mailbox.created_at
    previous_sync, known_delays = mailbox.last_synced_at, mailbox.push_delays
    saver = credential_saver(mailbox.id, mailbox.credentials_encrypted)
    try:
        credentials = decrypt_json(mailbox.credentials_encrypted)
    except CredentialsError as exc:
        set_status(mailbox_id, MailboxStatus.NEEDS_RECONNECT, str(exc))
        return stats
    credentials = with_skip_folders(credentials, mailbox.skip_folders)
    credentials |= sent_wanted(mailbox.draft_since)  # Sent listed while an add-on draft waits
    # A handled batch's cursor is written when the next batch is in hand, the last
    # one together with the sync's status: one commit fewer per sync (most syncs
    # are one batch), and a crash still re-lists at most one batch.
    handled: dict[str, object] | None = None
    # Mail that arrived before `started` is seen by this sync: what freshness means.
    started, (pushed_at, relist) = utcnow(), _take_push_and_listing(mailbox_id)
    if relist and kind in LISTING_KINDS:
        cursor = without_listing(cursor)
    learned: list[float] = []
    try:
        with open_provider(kind, ref.email, credentials, save_credentials=saver) as provider:
            # Start a little before the connection time: clocks differ.
            for batch in provider.changes(cursor, since - timedelta(days=1)):
                learned += push_latency.delays_seen(
                    batch.messages,
                    pushed_at=pushed_at,
                    sync_started=started,
                    previous_sync=previous_sync,
                )
                _handle_batch(provider, ref, batch, stats)
                if handled is not None:
                    save_cursor(mailbox_id, handled)
                handled = batch.cursor
            if mailbox.retries_due:
                _retry_quarantined(provider, ref, stats)
    except BaseException as exc:
        if handled is not None:
            save_cursor(mailbox_id, handled)
        cut = isinstance(exc, Exception) and not isinstance(exc, BaseTimeoutException)
        if cut and outbound_deadline.cut_off():
            # Cut off by the deadline (sync_now): whatever the provider made of the
            # closed connection ("login failed" included), the server was too slow.
            raise SlowServerError(mailbox_id) from exc
        if not isinstance(exc, ProviderError):
            raise
        if exc.needs_reconnect:
            set_status(mailbox_id, MailboxStatus.NEEDS_RECONNECT, str(exc))
            return stats
        if exc.permanent:
            set_status(mailbox_id, MailboxStatus.ERROR, str(exc))
            return stats
        raise
    latency = push_latency.delay_values(mailbox_id, known_delays, learned) if learned else {}
    set_status(mailbox_id, MailboxStatus.ACTIVE, None, synced=started, cursor=handled, also=latency)
    # A sync that found nothing new is the poll's heartbeat, one a minute per mailbox:
    # DEBUG. What a new message led to has its own INFO line (`inbound_recorded`).
    log.log(
        logging.INFO if stats.listed else logging.DEBUG,
        "sync_done mailbox_id=%s listed=%s fetched=%s outcomes=%s",
        mailbox_id,
        stats.listed,
        stats.fetched,
        stats.outcomes,
    )
    return stats


def _handle_batch(
    provider: MailboxProvider, mailbox: MailboxRef, batch: ChangeBatch, stats: SyncStats
) -> None:
    batch = recognise_sent(provider, mailbox, batch, stats.count)  # Sent: add-on mail
    stats.listed += len(batch.messages)
    candidates = {c for m in batch.messages for c in m.candidates}
    with read_scope() as session:  # lookups only: no BEGIN and COMMIT around them
        known = set(find_sent_messages(session, mailbox.team_id, candidates))
        wanted = {
            m.provider_id
            for m in batch.messages
            if known.intersection(m.candidates) or may_be_report(m)
        }
        wanted |= answers_without_references(
            session, mailbox, [m for m in batch.messages if m.provider_id not in wanted]
        )
    settings = get_settings()
    max_bytes, budget = settings.max_inbound_bytes, settings.classify_budget_ms / 1000
    for summary in batch.messages:
        if summary.provider_id not in wanted:
            continue
        try:
            raw = provider.fetch(summary.fetch_ref, max_bytes)
        except ProviderError as exc:
            if not exc.permanent or exc.needs_reconnect:
                raise
            # The provider cannot hand this one over (corrupt, converted badly,
            # gone): keep what we know where a person can see it, and go on.
            log.warning(
                "inbound_unfetchable mailbox_id=%s provider_id=%s reason=%s",
                mailbox.id,
                summary.provider_id,
                exc,
            )
            with session_scope() as session:
                quarantine(session, mailbox, summary, f"provider could not fetch it: {exc}")
            stats.quarantined += 1
            continue
        stats.fetched += 1
        _handle_one(mailbox, summary, raw, budget, stats)


def _handle_one(
    mailbox: MailboxRef, summary: HeaderSummary, raw: bytes, budget: float, stats: SyncStats
) -> str:
    """Handle one fetched message in its own transaction; returns its outcome's status.

    A message that cannot be handled is quarantined for a later try and the sync
    goes on; RQ's job timeout is let through (module docstring).
    """
    try:
        with session_scope() as session:
            outcome = handle_inbound(session, mailbox, summary, raw, budget=budget)
    except (ProviderError, BaseTimeoutException):
        raise
    except Exception as exc:
        log.exception(
            "inbound_quarantined mailbox_id=%s provider_id=%s", mailbox.id, summary.provider_id
        )
        with session_scope() as session:
            quarantine(session, mailbox, summary, f"{type(exc).__name__}: {exc}", retry=True)
        stats.quarantined += 1
        return "quarantined"
    if outcome.status == "quarantined":
        stats.quarantined += 1
    else:
        stats.count(outcome.status)
    return outcome.status


def _retry_quarantined(provider: MailboxProvider, mailbox: MailboxRef, stats: SyncStats) -> None:
    """Fetch and handle again the quarantined messages whose next try is due."""
    with session_scope() as session:
        due = held.due_retries(session, mailbox.id, utcnow())
    settings = get_settings()
    max_bytes, budget = settings.max_inbound_bytes, settings.classify_budget_ms / 1000
    for retry in due:
        summary = HeaderSummary(
            provider_id=retry.provider_id,
            fetch_ref=retry.fetch_ref,
            rfc_message_id=retry.rfc_message_id,
            from_addr=None,
            subject=None,
            candidates=[],
            headers={},
            received_at=retry.received_at,
        )
        try:
            raw = provider.fetch(retry.fetch_ref, max_bytes)
        except ProviderError as exc:
            if exc.needs_reconnect:
                raise
            # Gone, moved, or the provider is having a bad minute: one more try spent.
            with session_scope() as session:
                quarantine(
                    session,
                    mailbox,
                    summary,
                    f"provider could not fetch it: {exc}",
                    retry=True,
                )
            continue
        read = summarize_headers(raw, retry.fetch_ref)
        summary = replace(
            read,
            provider_id=retry.provider_id,
            fetch_ref=retry.fetch_ref,
            received_at=retry.received_at,
        )
        status = _handle_one(
            mailbox, summary, raw, held.retry_budget(budget, retry.attempts), stats
        )
        if status in ("unmatched", "ignored", "own"):
            # Read at last, it answers nothing of ours: such messages are not kept.
            with session_scope() as session:
                held.release(session, retry.id)
        log.info(
            "quarantine_retried mailbox_id=%s provider_id=%s status=%s",
            mailbox.id,
            retry.provider_id,
            status,
        )
