"""Recording what a recipient does in the viewer: visits, time per page, downloads.

A visit starts when ``/d/<token>`` is opened. It is labelled at once with the
tracking web's rules (`core.tracking.classify`: own device cookie or a recent
sign-in address → ``self``; HEAD, prefetch, gateway addresses, seconds after
sending → ``scanner``; crawler user agents → ``bot``; else ``person``) and only
the label is kept. The viewer's script then reports, as cumulative totals,
the milliseconds each page was on screen while the tab was visible and the
reader active (`BeaconReport`). Totals make beacons idempotent and order-free:
a page's time is the largest total ever reported, capped by the visit's age.

What counts (`person` visits confirmed by a first report):

    first report ─▶ event document_view (key document_view:<visit>)
                    ─▶ Salesforce: queue_engagement(kind="document_view") on the
                       email's Task (debounced counters)
    reader settles on page n ≥ 2 ─▶ event document_page (document_page:<visit>:<n>)
    download ─▶ event document_download (document_download:<visit>)

Everything else is stored on the visit and its page views, labelled, and never
becomes an event, a feed item or a Salesforce update.

These writes happen in the web request, in one short transaction of keyed
upserts: a beacon every ~10 s per open viewer is far from the pixel's volume,
and the chart reads its own writes. (If it ever must, `record_report` is
what a stream consumer would call instead.)

New visit rows are bounded, like the pixel's hits (`web.tracking.limits`): per
link, at most VISITS_PER_ADDRESS (10) new visits per address per
VISIT_WINDOW_SECONDS (an hour; the address is `address_key`: IPv4, or the IPv6
/64), and VISITS_PER_LINK_PER_DAY (1,000) in all per UTC day. A person rereading
a deck a few times an hour, or a team forwarding it around, stays far inside
both; a loop reloading the link does not. Past either, the document is still
shown (and downloads still served), only no visit row is written: counted per
kind ``visit`` in `sightline:tracking:shed` and logged `document_visit_shed`.
The counters are fixed windows in Redis (INCR + EXPIRE, one round trip each),
keyed by a hash of the address, never the address. If Redis cannot be reached
the visit is written (logged `document_visit_limit_unavailable`): nothing a
reader does is lost to an outage.

Must never: keep an address or a user agent, count a `self`, `scanner` or
`bot` visit, or trust a reported time longer than the visit has existed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crawlerdetect import CrawlerDetect
from flask import request
from redis.exceptions import RedisError
from sqlalchemy import case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config import get_settings
from core.events import natural_key, record_event
from core.models import (
    Device,
    Document,
    DocumentLink,
    DocumentPageView,
    DocumentVisit,
    Plan,
    Prospect,
    SentMessage,
    SignIn,
    Team,
    utcnow,
)
from core.redis import get_redis
from core.tracking.classify import HitFacts, Verdict, classify, is_prefetch
from core.tracking.hits import FEED_NUDGE_CHANNEL, feed_update
from core.tracking.ranges import known_ranges
from core.tracking.tokens import DEVICE_COOKIE, read_device_cookie
from web.auth import request_ip
from web.tracking.limits import SHED_KEY, address_key
from worker.salesforce.engagement import queue_engagement

log = logging.getLogger(__name__)

VISITS_PER_ADDRESS = 10
VISIT_WINDOW_SECONDS = 3600
VISITS_PER_LINK_PER_DAY = 1000
VISIT_ADDRESS_KEY = "sightline:visits:{link}:address:{address}:{window}"
VISIT_DAY_KEY = "sightline:visits:{link}:day:{day}"
COUNTED_CLASS = "person"
# A report may run ahead of the server's clock by this much (network, rounding).
SLACK_MS = 5_000
# Settling on a page this long makes a "now on page n" feed item.
PAGE_EVENT_MS = 1_000
MAX_PAGES_IN_REPORT = 5_000


class ReportError(ValueError):
    """A beacon body we refuse; the message names what is wrong."""


@dataclass(frozen=True)
class BeaconReport:
    page: int
    ms: dict[int, int]
    final: bool = False

    @classmethod
    def parse(cls, body: Any, page_count: int) -> BeaconReport:
        if not isinstance(body, dict):
            raise ReportError("expected a JSON object")
        page = body.get("page")
        if type(page) is not int or not 1 <= page <= page_count:
            raise ReportError(f"page: expected a page number from 1 to {page_count}")
        raw = body.get("ms")
        if not isinstance(raw, dict) or len(raw) > min(page_count, MAX_PAGES_IN_REPORT):
            raise ReportError("ms: expected an object of page number to milliseconds")
        ms: dict[int, int] = {}
        for key, value in raw.items():
            if not isinstance(key, str) or not key.isdigit() or not 1 <= int(key) <= page_count:
                raise ReportError(f"ms: {key!r} is not a page of this document")
            if type(value) is not int or value < 0:
                raise ReportError(f"ms.{key}: expected a whole number of milliseconds")
            ms[int(key)] = value
        final = body.get("final", False)
        if not isinstance(final, bool):
            raise ReportError("final: expected true or false")
        return cls(page=page, ms=ms, final=final)


# -- labelling a visit --------------------------------------------------------------


class _Crawlers(threading.local):
    def __init__(self) -> None:
        self.detector = CrawlerDetect()


_crawlers = _Crawlers()


def _is_crawler(user_agent: str) -> str | None:
    detector = _crawlers.detector
    if detector.isCrawler(user_agent):
        return str(detector.getMatches() or "crawler")
    return None


def _own_ips(session: Session, team_id: int) -> list[str]:
    hours = get_settings().tracking_self_window_hours
    if not hours:
        return []
    since = utcnow() - timedelta(hours=hours)
    rows = session.scalars(
        select(SignIn.ip)
        .where(SignIn.team_id == team_id, SignIn.at >= since, SignIn.ip.is_not(None))
        .distinct()
    )
    return [str(ip) for ip in rows]


def device_of_team(session: Session, team_id: int) -> Device | None:
    """The request's own-device cookie, if it names a live device of `team_id`."""
    ref = read_device_cookie(request.cookies.get(DEVICE_COOKIE, ""))
    if ref is None or ref.team_id != team_id:
        return None
    device = session.scalar(
        select(Device).where(Device.public_id == ref.device_id, Device.revoked_at.is_(None))
    )
    return device if device is not None and device.team_id == team_id else None


def label_request(
    session: Session, link: DocumentLink, sent: SentMessage
) -> tuple[Verdict, str | None]:
    """The label of the current request, and the own device's public id if it is one."""
    now = utcnow()
    device = device_of_team(session, link.team_id)
    sent_at = sent.sent_at or sent.claimed_at
    facts = HitFacts(
        kind="click",
        method=request.method,
        ip=request_ip(),
        user_agent=(request.user_agent.string or "")[:500],
        prefetch=is_prefetch(request.headers.items()),
        team_id=link.team_id,
        device_team_id=device.team_id if device is not None else None,
        seconds_after_send=(now - sent_at).total_seconds(),
    )
    verdict = classify(
        facts,
        known_ranges(),
        is_crawler=_is_crawler,
        own_ips=_own_ips(session, link.team_id),
        scanner_seconds=get_settings().tracking_scanner_seconds,
    )
    return verdict, device.public_id if device is not None else None


def _count(key: str, ttl: int) -> int:
    pipe = get_redis().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, ttl)
    return int(pipe.execute()[0])


def admit_visit(link_id: int, ip: str | None, now: float | None = None) -> bool:
    """True if a new visit row may be written for this link from this address.

    The address's count goes first; the link's daily count only counts visits the
    address was allowed, so one address reloading cannot use up everyone's day.
    """
    now = time.time() if now is None else now
    address = hashlib.sha256(address_key(ip).encode()).hexdigest()[:24]
    window, day = int(now // VISIT_WINDOW_SECONDS), int(now // 86400)
    try:
        by_address = _count(
            VISIT_ADDRESS_KEY.format(link=link_id, address=address, window=window),
            VISIT_WINDOW_SECONDS + 60,
        )
        reason = "address" if by_address > VISITS_PER_ADDRESS else None
        if reason is None:
            by_link = _count(VISIT_DAY_KEY.format(link=link_id, day=day), 86400 + 3600)
            reason = "link" if by_link > VISITS_PER_LINK_PER_DAY else None
        if reason is None:
            return True
        get_redis().hincrby(SHED_KEY, "visit", 1)
    except (RedisError, OSError) as exc:
        log.warning("document_visit_limit_unavailable error=%s", type(exc).__name__)
        return True
    log.info("document_visit_shed link_id=%s reason=%s", link_id, reason)
    return False


def start_visit(session: Session, link: DocumentLink, sent: SentMessage) -> DocumentVisit | None:
    """A new visit of the link, labelled; None when the link's visit limits shed it."""
    if not admit_visit(link.id, request_ip()):
        return None  # the page is still shown: only no row is written
    verdict, device_id = label_request(session, link, sent)
    now = utcnow()
    visit = DocumentVisit(
        team_id=link.team_id,
        document_id=link.document_id,
        document_version=session.get_one(Document, link.document_id).version,
        link_id=link.id,
        hit_class=str(verdict.hit_class),
        reason=verdict.reason[:200],
        device_id=device_id,
        started_at=now,
        last_seen_at=now,
        current_page=1,
        pages_seen=0,
        total_ms=0,
    )
    session.add(visit)
    session.flush()
    log.info(
        "document_visit visit_id=%s link_id=%s document_id=%s class=%s",
        visit.id,
        link.id,
        link.document_id,
        visit.hit_class,
    )
    return visit


# -- what counts ----------------------------------------------------------------------


def tracking_on(session: Session, link: DocumentLink) -> bool:
    """The link was made tracked, its team tracks documents now (team plan, tracking
    on) and its prospect has not been marked "do not track" since.

    When it is off, the viewer works and records nothing at all.
    """
    if not link.tracked:
        return False
    if link.prospect_id is not None and session.scalar(
        select(Prospect.do_not_track).where(Prospect.id == link.prospect_id)
    ):
        return False
    team = session.get_one(Team, link.team_id)
    return team.plan == Plan.TEAM and team.tracking_enabled


def counts(session: Session, visit: DocumentVisit, link: DocumentLink) -> bool:
    """A person's visit, on a link of a team that tracks documents now."""
    return visit.hit_class == COUNTED_CLASS and tracking_on(session, link)


def feed_text(kind: str, data: dict[str, Any]) -> str | None:
    """The Live Feed's words for a document event, e.g. "opened pricing.pdf".

    Hook for `web.feed`: its label function can show this for the kinds
    `document_view`, `document_page` and `document_download` (the same words
    are stored in the event's ``data["text"]``). None for other kinds.
    """
    name = data.get("document") or "a document"
    if kind == "document_view":
        return f"opened {name}"
    if kind == "document_page":
        return f"now on page {data.get('page')} of {name}"
    if kind == "document_download":
        return f"downloaded {name}"
    return None


def _record(
    session: Session,
    kind: str,
    key: str,
    visit: DocumentVisit,
    link: DocumentLink,
    document: Document,
    at: datetime,
    **extra: Any,
) -> int | None:
    sent = session.get_one(SentMessage, link.sent_message_id)
    data: dict[str, Any] = {
        "document_id": document.id,
        "document": document.name,
        "visit_id": visit.id,
        "link_id": link.id,
        "pages": document.page_count,
        "recipient": link.recipient,
        **extra,
    }
    data["text"] = feed_text(kind, data)
    return record_event(
        session,
        team_id=link.team_id,
        key=key,
        kind=kind,
        occurred_at=at,
        sent_message_id=link.sent_message_id,
        enrollment_id=sent.enrollment_id,
        prospect_id=link.prospect_id or sent.prospect_id,
        data=data,
    )


def nudge_feed(item_id: int | None = None) -> None:
    """Wake the Live Feed's poller now rather than at its next tick (best effort);
    with `item_id`, that item changed in place (a visit read on) and is sent again."""
    try:
        get_redis().publish(FEED_NUDGE_CHANNEL, feed_update(item_id) if item_id else "1")
    except (RedisError, OSError) as exc:
        log.warning("feed_nudge_failed error=%s", type(exc).__name__)


def _upsert_page_views(session: Session, visit_id: int, ms: dict[int, int], now: datetime) -> None:
    table: Any = DocumentPageView.__table__
    rows = [
        {"visit_id": visit_id, "page": page, "ms": value, "first_seen_at": now, "last_seen_at": now}
        for page, value in ms.items()
    ]
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    stmt = insert.values(rows)
    old = table.c
    stmt = stmt.on_conflict_do_update(
        index_elements=["visit_id", "page"],
        set_={
            "ms": case((stmt.excluded.ms > old.ms, stmt.excluded.ms), else_=old.ms),
            "last_seen_at": case(
                (stmt.excluded.ms > old.ms, stmt.excluded.last_seen_at), else_=old.last_seen_at
            ),
        },
    )
    session.execute(stmt)


def plausible(report: BeaconReport, visit: DocumentVisit, now: datetime) -> dict[int, int]:
    """The report's times, capped by how long the visit has existed."""
    ceiling = int((now - visit.started_at).total_seconds() * 1000) + SLACK_MS
    capped = {page: min(value, ceiling) for page, value in report.ms.items() if value > 0}
    total = sum(capped.values())
    if total > ceiling:
        log.warning("document_report_scaled visit_id=%s reported_ms=%s", visit.id, total)
        capped = {page: value * ceiling // total for page, value in capped.items()}
    return capped


def record_report(
    session: Session, visit_id: int, report: BeaconReport, document: Document
) -> int | None:
    """Apply one beacon. Returns the visit's Live Feed item (its document_view event id)
    when the beacon moved it on (a counted visit: a page, a minute, the reader leaving)."""
    now = utcnow()
    # The first write takes the visit's row lock: a visit's reports apply one at a time.
    session.execute(
        update(DocumentVisit)
        .where(DocumentVisit.id == visit_id)
        .values(last_seen_at=now, current_page=report.page, ended_at=now if report.final else None)
    )
    visit = session.get_one(DocumentVisit, visit_id)
    session.refresh(visit)
    link = session.get_one(DocumentLink, visit.link_id)
    ms = plausible(report, visit, now)
    if ms:
        _upsert_page_views(session, visit.id, ms, now)
    total, pages_seen = session.execute(
        select(
            func.coalesce(func.sum(DocumentPageView.ms), 0),
            func.count(DocumentPageView.id),
        ).where(DocumentPageView.visit_id == visit.id, DocumentPageView.ms > 0)
    ).one()
    visit.total_ms = int(total)
    visit.pages_seen = int(pages_seen)
    if not int(total) or not counts(session, visit, link):
        if visit.confirmed_at is None and int(total):
            visit.confirmed_at = now
        return None
    if visit.confirmed_at is None:
        visit.confirmed_at = now
        event_id = _record(
            session,
            "document_view",
            natural_key("document_view", visit.id),
            visit,
            link,
            document,
            visit.started_at,
            page=report.page,
        )
        if event_id is not None:
            visit.event_id = event_id
            queue_engagement(
                session,
                sent_message_id=link.sent_message_id,
                kind="document_view",
                occurred_at=visit.started_at,
            )
    if report.page > 1 and ms.get(report.page, 0) >= PAGE_EVENT_MS:
        # Kept for timelines and the API; the Live Feed shows the visit's one item instead.
        _record(
            session,
            "document_page",
            natural_key("document_page", visit.id, report.page),
            visit,
            link,
            document,
            now,
            page=report.page,
        )
    return visit.event_id


def record_download(
    session: Session, visit: DocumentVisit | None, link: DocumentLink, document: Document
) -> bool:
    """Mark the visit downloaded. Returns True if it made a feed-worthy event.

    None (a visit the limits shed): the file is served, nothing is recorded.
    """
    if visit is None:
        return False
    now = utcnow()
    if visit.downloaded_at is None:
        visit.downloaded_at = now
    if not counts(session, visit, link):
        return False
    event_id = _record(
        session,
        "document_download",
        natural_key("document_download", visit.id),
        visit,
        link,
        document,
        now,
    )
    return event_id is not None
