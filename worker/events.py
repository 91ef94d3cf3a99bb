"""The `events` process: drains the tracking hit stream into the database.

Loop::

    XREADGROUP events <me> (own pending entries first, then new ones)
      │   every 30 s: XAUTOCLAIM entries idle > 60 s (a consumer that died)
      ▼
    one transaction per batch:
      look up the batch's sent messages, devices and the teams' recent sign-ins
      label each hit (core.tracking.classify)
      INSERT the hit ... ON CONFLICT (stream_id) DO NOTHING
        new? ──▶ open/click event by natural key (+ an inferred open for a
                 click on a message with no counted open) ──▶ Salesforce engagement
    COMMIT ──▶ XACK + XDEL ──▶ PUBLISH sightline:feed:nudge

An entry is acknowledged only after its transaction committed, so a crash
anywhere before that leaves it pending for this consumer (on restart) or another
(XAUTOCLAIM); re-draining it inserts nothing new because every write is keyed.
The same process clears addresses and user agents older than the retention
(hourly, one process at a time).

Event keys: ``open:<sent>:<recipient>:<10-min bucket>:counted|probable``,
``open:<sent>:<recipient>:inferred``, ``click:<sent>:<recipient>:<link>:<bucket>``.
Hits on mail to a prospect marked "do not track" are dropped, never stored.
`self`, `scanner` and `bot` hits are stored as hits only: never an event, never
in the feed, never sent to Salesforce.

Must never: acknowledge an entry before its writes committed, or call Salesforce
(it queues through `worker.salesforce.engagement`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from crawlerdetect import CrawlerDetect
from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from config import get_settings
from config.logging import configure_logging
from core.db import session_scope
from core.events import insert_ignore, natural_key, record_event
from core.models import Device, Event, Prospect, SentMessage, SignIn, TrackingHit, utcnow
from core.redis import get_redis
from core.tracking import hits as hit_stream
from core.tracking.classify import COUNTED, PROBABLE, HitFacts, Verdict, classify
from core.tracking.hits import Hit, MalformedHitError
from core.tracking.ranges import known_ranges
from worker.salesforce.engagement import queue_engagement

log = logging.getLogger(__name__)

BATCH = 500
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000
CLAIM_EVERY_SECONDS = 30.0
PRUNE_EVERY_SECONDS = 3600
OPEN_BUCKET_SECONDS = 600
CLICK_BUCKET_SECONDS = 600


@dataclass
class DrainStats:
    entries: int = 0
    stored: int = 0
    duplicates: int = 0
    events: int = 0
    malformed: int = 0
    skipped: int = 0
    classes: dict[str, int] = field(default_factory=dict)


def queue_salesforce_engagement(
    session: Session, sent_message_id: int, kind: str, at: datetime
) -> None:
    """Engagement happened (a counted open or click): let Salesforce know, debounced.

    `queue_engagement` moves the sent email's counters and owes its Task an
    update, in this same transaction.
    """
    queue_engagement(session, sent_message_id=sent_message_id, kind=kind, occurred_at=at)


class _Crawlers:
    """crawlerdetect keeps per-call state: one detector per draining thread."""

    def __init__(self) -> None:
        self._detector = CrawlerDetect()

    def __call__(self, user_agent: str) -> str | None:
        if self._detector.isCrawler(user_agent):
            return str(self._detector.getMatches() or "crawler")
        return None


_crawlers = threading.local()


def _is_crawler(user_agent: str) -> str | None:
    if not hasattr(_crawlers, "detector"):
        _crawlers.detector = _Crawlers()
    detector: _Crawlers = _crawlers.detector
    return detector(user_agent)


# -- one batch ------------------------------------------------------------------


def _own_ips(session: Session, team_ids: set[int], since: datetime) -> dict[int, list[str]]:
    rows = session.execute(
        select(SignIn.team_id, SignIn.ip)
        .where(SignIn.team_id.in_(team_ids), SignIn.at >= since, SignIn.ip.is_not(None))
        .distinct()
    )
    found: dict[int, list[str]] = {}
    for team_id, ip in rows:
        found.setdefault(int(team_id), []).append(str(ip))
    return found


def _has_counted_open(session: Session, sent_id: int, recipient: int) -> bool:
    prefix = f"open:{sent_id}:{recipient}:"
    return (
        session.scalar(
            select(Event.id)
            .where(
                Event.sent_message_id == sent_id,
                Event.kind == "open",
                or_(Event.key.like(f"{prefix}%:counted"), Event.key == f"{prefix}inferred"),
            )
            .limit(1)
        )
        is not None
    )


def _bucket(at: datetime, seconds: int) -> int:
    return int(at.timestamp()) // seconds


def _event_for(
    session: Session, hit: Hit, sent: SentMessage, verdict: Verdict, stats: DrainStats
) -> int | None:
    """Record the hit's event if it is reader activity. Returns the event id if new."""
    counted = verdict.hit_class in COUNTED
    if not counted and not (hit.kind == "open" and verdict.hit_class in PROBABLE):
        return None
    at = hit.at
    data: dict[str, Any] = {
        "hit_class": str(verdict.hit_class),
        "probable": not counted,
        "recipient": hit.recipient,
    }
    if hit.kind == "open":
        tier = "counted" if counted else "probable"
        key = natural_key("open", sent.id, hit.recipient, _bucket(at, OPEN_BUCKET_SECONDS), tier)
    else:
        data.update(url=hit.url, link=hit.link)
        key = natural_key(
            "click", sent.id, hit.recipient, hit.link, _bucket(at, CLICK_BUCKET_SECONDS)
        )
    if hit.kind == "click" and not _has_counted_open(session, sent.id, hit.recipient):
        inferred = record_event(
            session,
            team_id=sent.team_id,
            key=natural_key("open", sent.id, hit.recipient, "inferred"),
            kind="open",
            occurred_at=at,
            sent_message_id=sent.id,
            enrollment_id=sent.enrollment_id,
            prospect_id=sent.prospect_id,
            data={**{k: v for k, v in data.items() if k not in ("url", "link")}, "inferred": True},
        )
        if inferred is not None:
            stats.events += 1
            queue_salesforce_engagement(session, sent.id, "open", at)
    event_id = record_event(
        session,
        team_id=sent.team_id,
        key=key,
        kind=hit.kind,
        occurred_at=at,
        sent_message_id=sent.id,
        enrollment_id=sent.enrollment_id,
        prospect_id=sent.prospect_id,
        data=data,
    )
    if event_id is not None:
        stats.events += 1
        if counted:
            queue_salesforce_engagement(session, sent.id, hit.kind, at)
    return event_id


def store_hits(session: Session, batch: Sequence[Hit], stats: DrainStats) -> None:
    """Label and store a batch of hits, with their events. The caller commits."""
    settings = get_settings()
    ranges = known_ranges()
    sent_ids = {h.sent_message_id for h in batch}
    found = session.execute(
        select(SentMessage, Prospect.do_not_track)
        .outerjoin(Prospect, Prospect.id == SentMessage.prospect_id)
        .where(SentMessage.id.in_(sent_ids))
    ).all()
    sents = {s.id: s for s, _ in found}
    untracked = {s.id for s, do_not_track in found if do_not_track}
    teams = {s.team_id for s in sents.values()}
    window = timedelta(hours=settings.tracking_self_window_hours)
    own_ips = _own_ips(session, teams, utcnow() - window) if window else {}
    device_ids = {h.device_id for h in batch if h.device_id}
    devices = (
        {
            d.public_id: d
            for d in session.scalars(
                select(Device).where(Device.public_id.in_(device_ids), Device.revoked_at.is_(None))
            )
        }
        if device_ids
        else {}
    )
    now = utcnow()
    for hit in batch:
        sent = sents.get(hit.sent_message_id)
        if sent is None or sent.team_id != hit.team_id:
            # The message was erased (or the token names another team): nothing to attach to.
            log.warning("hit_skipped stream_id=%s reason=no_such_message", hit.stream_id)
            stats.skipped += 1
            continue
        # Only mail sent tracked carries a token, so a hit is never dropped for the team's
        # default (a sequence or email may turn tracking on); "do not track" always wins.
        if sent.id in untracked:
            stats.skipped += 1
            continue
        device = devices.get(hit.device_id or "")
        facts = HitFacts(
            kind=hit.kind,
            method=hit.method,
            ip=hit.ip,
            user_agent=hit.user_agent,
            prefetch=hit.prefetch,
            team_id=sent.team_id,
            device_team_id=device.team_id if device is not None else None,
            # The token's issue time is when this very copy was handed over.
            seconds_after_send=hit.at.timestamp() - hit.issued_at,
        )
        verdict = classify(
            facts,
            ranges,
            is_crawler=_is_crawler,
            own_ips=own_ips.get(sent.team_id, ()),
            scanner_seconds=settings.tracking_scanner_seconds,
        )
        hit_id = insert_ignore(
            session,
            TrackingHit.__table__,  # type: ignore[arg-type]
            {
                "stream_id": hit.stream_id,
                "team_id": sent.team_id,
                "sent_message_id": sent.id,
                "recipient": hit.recipient,
                "kind": hit.kind,
                "link": hit.link,
                "url": hit.url,
                "hit_class": str(verdict.hit_class),
                "reason": verdict.reason[:200],
                "method": hit.method,
                "ip": hit.ip,
                "user_agent": hit.user_agent or None,
                "device_id": hit.device_id,
                "at": hit.at,
                "created_at": now,
            },
            "stream_id",
        )
        if hit_id is None:
            stats.duplicates += 1  # drained before; its events were written with it
            continue
        stats.stored += 1
        stats.classes[verdict.hit_class] = stats.classes.get(verdict.hit_class, 0) + 1
        event_id = _event_for(session, hit, sent, verdict, stats)
        if event_id is not None:
            session.execute(
                update(TrackingHit).where(TrackingHit.id == hit_id).values(event_id=event_id)
            )


def drain_entries(client: redis.Redis, entries: Sequence[tuple[Any, dict[Any, Any]]]) -> DrainStats:
    """Store a batch of stream entries, then acknowledge and delete them."""
    stats = DrainStats(entries=len(entries))
    if not entries:
        return stats
    batch: list[Hit] = []
    for entry_id, fields in entries:
        try:
            batch.append(hit_stream.decode(entry_id, fields))
        except MalformedHitError as exc:
            stats.malformed += 1
            log.error("hit_malformed error=%s", exc)
    if batch:
        with session_scope() as session:
            store_hits(session, batch, stats)
    ids = [entry_id for entry_id, _ in entries]
    with client.pipeline() as pipe:
        pipe.xack(hit_stream.STREAM, hit_stream.GROUP, *ids)
        pipe.xdel(hit_stream.STREAM, *ids)
        pipe.execute()
    if stats.events:
        try:
            client.publish(hit_stream.FEED_NUDGE_CHANNEL, "1")
        except redis.RedisError as exc:  # the feed polls anyway; only slower
            log.warning("feed_nudge_failed error=%s", type(exc).__name__)
    log.info(
        "hits_drained entries=%s stored=%s duplicates=%s events=%s skipped=%s malformed=%s "
        "classes=%s",
        stats.entries,
        stats.stored,
        stats.duplicates,
        stats.events,
        stats.skipped,
        stats.malformed,
        ",".join(f"{k}:{v}" for k, v in sorted(stats.classes.items())) or "-",
    )
    return stats


# -- the consumer ---------------------------------------------------------------


def ensure_group(client: redis.Redis) -> None:
    """Create the consumer group (from the stream's start, so no early hit is skipped)."""
    try:
        client.xgroup_create(hit_stream.STREAM, hit_stream.GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consumer_name() -> str:
    # Heroku's DYNO ("events.1") survives a restart, so a restarted dyno finds its
    # own pending entries first; elsewhere host and pid name the consumer.
    return os.environ.get("DYNO") or f"{socket.gethostname()}-{os.getpid()}"


class Consumer:
    def __init__(self, client: redis.Redis, name: str, batch: int = BATCH) -> None:
        self.client = client
        self.name = name
        self.batch = batch
        self.stopping = threading.Event()
        self.last_claim = 0.0
        self.last_prune = 0.0

    def read_own_pending(self) -> list[tuple[Any, dict[Any, Any]]]:
        reply = self.client.xreadgroup(
            hit_stream.GROUP, self.name, {hit_stream.STREAM: "0"}, count=self.batch
        )
        return _entries(reply)

    def read_new(self, block_ms: int = BLOCK_MS) -> list[tuple[Any, dict[Any, Any]]]:
        reply = self.client.xreadgroup(
            hit_stream.GROUP, self.name, {hit_stream.STREAM: ">"}, count=self.batch, block=block_ms
        )
        return _entries(reply)

    def claim_abandoned(self) -> list[tuple[Any, dict[Any, Any]]]:
        """Entries another consumer read and never acknowledged (it died)."""
        reply = self.client.xautoclaim(
            hit_stream.STREAM,
            hit_stream.GROUP,
            self.name,
            min_idle_time=CLAIM_IDLE_MS,
            start_id="0-0",
            count=self.batch,
        )
        return [(entry_id, fields) for entry_id, fields in reply[1] if fields is not None]

    def step(self) -> DrainStats:
        """One round: abandoned entries (now and then), own pending, then new ones."""
        now = time.monotonic()
        if now - self.last_claim >= CLAIM_EVERY_SECONDS:
            self.last_claim = now
            claimed = self.claim_abandoned()
            if claimed:
                log.info("hits_claimed consumer=%s count=%s", self.name, len(claimed))
                return drain_entries(self.client, claimed)
        pending = self.read_own_pending()
        if pending:
            return drain_entries(self.client, pending)
        return drain_entries(self.client, self.read_new())

    def run(self) -> None:
        ensure_group(self.client)
        log.info("events_consumer_started consumer=%s", self.name)
        while not self.stopping.is_set():
            try:
                self.step()
                self.maybe_prune()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("events_redis_unavailable error=%s", type(exc).__name__)
                self.stopping.wait(2)
            except OperationalError as exc:
                # A deadlock (a Salesforce flusher claiming the outbox rows this batch
                # upserts, in another order) or the database going away: the batch's
                # transaction rolled back and nothing was acknowledged, so the next
                # step drains the same entries again (own pending first). The chaos
                # run found the consumer dying of this instead.
                log.warning(
                    "events_database_error error=%s detail=%s",
                    type(exc.orig).__name__,
                    str(exc.orig).splitlines()[0] if exc.orig else "",
                )
                self.stopping.wait(1)
            except redis.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted under us
                    ensure_group(self.client)
                    continue
                raise
        log.info("events_consumer_stopped consumer=%s", self.name)

    def maybe_prune(self) -> None:
        now = time.monotonic()
        if now - self.last_prune < 60:
            return
        self.last_prune = now
        # One process an hour, whichever gets there first.
        if self.client.set("sightline:events:prune", self.name, nx=True, ex=PRUNE_EVERY_SECONDS):
            prune_personal_data()


def _entries(reply: Any) -> list[tuple[Any, dict[Any, Any]]]:
    if not reply:
        return []
    entries: list[tuple[Any, dict[Any, Any]]] = []
    for _stream, items in reply:
        entries.extend((entry_id, fields) for entry_id, fields in items if fields)
    return entries


def prune_personal_data(now: datetime | None = None) -> tuple[int, int]:
    """Clear addresses and user agents past the retention. Returns (hits, sign-ins)."""
    settings = get_settings()
    now = now or utcnow()
    hits_before = now - timedelta(days=settings.tracking_pii_days)
    sign_ins_before = now - max(
        timedelta(days=settings.tracking_pii_days),
        timedelta(hours=settings.tracking_self_window_hours),
    )
    with session_scope() as session:
        hits = session.execute(
            update(TrackingHit)
            .where(
                TrackingHit.at < hits_before,
                or_(TrackingHit.ip.is_not(None), TrackingHit.user_agent.is_not(None)),
            )
            .values(ip=None, user_agent=None)
        )
        sign_ins = session.execute(
            update(SignIn)
            .where(
                SignIn.at < sign_ins_before,
                or_(SignIn.ip.is_not(None), SignIn.user_agent.is_not(None)),
            )
            .values(ip=None, user_agent=None)
        )
    counts = (int(hits.rowcount), int(sign_ins.rowcount))  # type: ignore[attr-defined]
    level = logging.INFO if any(counts) else logging.DEBUG  # hourly: INFO if it cleared any
    log.log(level, "tracking_pii_pruned hits=%s sign_ins=%s", *counts)
    return counts


def main() -> None:
    settings = get_settings()
    configure_logging(settings)
    consumer = Consumer(get_redis(), consumer_name())

    def stop(signum: int, _frame: object) -> None:
        log.info("events_consumer_stopping signal=%s", signum)
        consumer.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer.run()


if __name__ == "__main__":
    main()
