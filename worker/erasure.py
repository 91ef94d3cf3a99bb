"""Erasing a person (GDPR art. 17): everything naming them goes, a keyed hash stays.

What this module owns: the one transaction behind "erase this person" that the
prospect page and the API share. Given a team and an address::

    prospect ─┬─ enrolments ── transitions
              ├─ sent messages ─┬─ tracking hits, engagement summary
              │                 ├─ document links ── visits ── page views
              │                 ├─ inbound messages (their replies, bounces ...)
              │                 └─ one-off emails ── attachments
              ├─ events (the Live Feed's items are read from these and visits)
              ├─ Salesforce outbox rows for the address (see below)
              └─ every other row pointing at the prospect (opt-out history ...)
    then: mentions of the address or the full name left in the team's other rows
          (a colleague's reply quoting them, a CC on someone else's email, a
          history line) replaced with "[erased]"
    kept: `erased_addresses` (team, HMAC of the address: `core.erasure`), so
          enrolling, importing, composing or the API refuse them from now on.

Everything is deleted in the caller's transaction: it all goes or nothing does.

Salesforce: we never delete CRM data. Tasks already written stay in the org
(their ids are in the answer, for whoever handles the request there); rows not
yet written (pending, waiting for a Contact, failed) are deleted, so nothing
more about the person ever reaches Salesforce; a row a flush holds at this
moment may still land, and the answer says so. The resolver's cached
Contact/Lead answer for the address (Redis) is dropped.

Must never: log the address or the name; leave a row that names them; delete
CRM data.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import JSON, String, Table, Text, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.erasure import address_hash, normalise
from core.events import insert_ignore
from core.models import (
    Base,
    DocumentLink,
    DocumentPageView,
    DocumentVisit,
    Enrollment,
    EnrollmentTransition,
    ErasedAddress,
    Event,
    InboundMessage,
    MessageDocument,
    OneOffAttachment,
    OneOffEmail,
    OutboxStatus,
    Prospect,
    SalesforceEngagement,
    SalesforceOutbox,
    SentMessage,
    TrackingHit,
)
from core.redis import get_redis

log = logging.getLogger(__name__)

ERASED = "[erased]"
# Tables whose text is the team's own content or ours, not about a prospect.
_NOT_SWEPT = {"erased_addresses", "document_blobs", "document_pages", "teams", "users"}
_CHUNK = 500


@dataclass
class ErasureReport:
    """What the erasure did, in numbers, and what stays in Salesforce."""

    prospect_found: bool = False
    deleted: dict[str, int] = field(default_factory=dict)
    mentions_replaced: int = 0
    salesforce_tasks: list[str] = field(default_factory=list)  # Task ids already written
    salesforce_in_flight: int = 0
    salesforce_dropped: int = 0

    def salesforce_note(self) -> str:
        """What stays in Salesforce, in words for the person who asked."""
        parts = []
        if self.salesforce_tasks:
            ids = ", ".join(self.salesforce_tasks)
            parts.append(
                f"{len(self.salesforce_tasks)} Salesforce Task(s) about this person were already "
                f"written and stay in Salesforce ({ids})."
            )
        else:
            parts.append("No Salesforce Task about this person had been written.")
        if self.salesforce_in_flight:
            parts.append(
                f"{self.salesforce_in_flight} Task(s) were being written at this moment and may "
                "have reached Salesforce."
            )
        if self.salesforce_dropped:
            parts.append(f"{self.salesforce_dropped} Task(s) not yet written will never be.")
        parts.append(
            "Sightline never deletes CRM data: the Contact or Lead, and these Tasks, must be "
            "removed in Salesforce if the request covers them."
        )
        return " ".join(parts)


def erase_person(
    session: Session, *, team_id: int, email: str, user_id: int | None, now: datetime
) -> ErasureReport:
    """Erase the person at `email` from the team; keep their keyed hash. Never commits."""
    address = normalise(email)
    report = ErasureReport()
    prospect = session.scalar(
        select(Prospect).where(Prospect.team_id == team_id, Prospect.email == address)
    )
    name = prospect.name if prospect is not None else None
    if prospect is not None:
        report.prospect_found = True
        _delete_prospect_rows(session, team_id, prospect.id, address, report)
    _delete_outbox(session, team_id, address, report)
    _delete_inbound_from(session, team_id, address, report)
    needles = [address] + ([name] if name and len(name.strip()) >= 3 else [])
    report.mentions_replaced = _replace_mentions(session, team_id, needles)
    insert_ignore(
        session,
        ErasedAddress.__table__,  # type: ignore[arg-type]
        {
            "team_id": team_id,
            "address_hash": address_hash(address),
            "erased_by": user_id,
            "erased_at": now,
        },
        ["team_id", "address_hash"],
    )
    _forget_cached_salesforce_answer(address)
    log.info(
        "person_erased team_id=%s user_id=%s prospect_found=%s deleted=%s mentions=%s "
        "salesforce_tasks=%s",
        team_id,
        user_id,
        report.prospect_found,
        sum(report.deleted.values()),
        report.mentions_replaced,
        len(report.salesforce_tasks),
    )
    return report


def _ids(session: Session, query: Any) -> list[int]:
    return [int(i) for i in session.scalars(query)]


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _delete_in(
    session: Session, report: ErasureReport, what: str, column: Any, ids: list[int]
) -> None:
    """DELETE rows whose `column` is one of `ids`, counted under `what`."""
    for chunk in _chunks(ids):
        result = session.execute(
            delete(column.class_)
            .where(column.in_(chunk))
            .execution_options(synchronize_session=False)
        )
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        report.deleted[what] = report.deleted.get(what, 0) + count


def _delete_prospect_rows(
    session: Session, team_id: int, prospect_id: int, address: str, report: ErasureReport
) -> None:
    enrollments = _ids(session, select(Enrollment.id).where(Enrollment.prospect_id == prospect_id))
    sent_filter = [SentMessage.prospect_id == prospect_id]
    if enrollments:
        sent_filter.append(SentMessage.enrollment_id.in_(enrollments))
    sent = _ids(
        session, select(SentMessage.id).where(SentMessage.team_id == team_id, or_(*sent_filter))
    )
    links = _ids(
        session,
        select(DocumentLink.id).where(
            DocumentLink.team_id == team_id,
            or_(DocumentLink.prospect_id == prospect_id, DocumentLink.sent_message_id.in_(sent)),
        ),
    )
    visits = _ids(session, select(DocumentVisit.id).where(DocumentVisit.link_id.in_(links)))
    inbound = _ids(
        session,
        select(InboundMessage.id).where(
            InboundMessage.team_id == team_id, InboundMessage.sent_message_id.in_(sent)
        ),
    )
    event_filter = [Event.prospect_id == prospect_id, Event.sent_message_id.in_(sent)]
    if enrollments:
        event_filter.append(Event.enrollment_id.in_(enrollments))
    if inbound:
        event_filter.append(Event.inbound_message_id.in_(inbound))
    events = _ids(session, select(Event.id).where(Event.team_id == team_id, or_(*event_filter)))
    one_offs = _ids(
        session,
        select(OneOffEmail.id).where(
            OneOffEmail.team_id == team_id,
            or_(OneOffEmail.prospect_id == prospect_id, OneOffEmail.sent_message_id.in_(sent)),
        ),
    )
    # Outbox rows of these events go too (a reply Task may name the sender, not them).
    outbox = _ids(
        session,
        select(SalesforceOutbox.id).where(
            SalesforceOutbox.team_id == team_id, SalesforceOutbox.event_id.in_(events)
        ),
    )
    _settle_outbox_report(session, outbox, report)
    _delete_in(session, report, "salesforce_outbox", SalesforceOutbox.id, outbox)
    _delete_in(session, report, "document_page_views", DocumentPageView.visit_id, visits)
    _delete_in(session, report, "document_visits", DocumentVisit.id, visits)
    _delete_in(session, report, "document_links", DocumentLink.id, links)
    _delete_in(session, report, "message_documents", MessageDocument.sent_message_id, sent)
    _delete_in(session, report, "tracking_hits", TrackingHit.sent_message_id, sent)
    _delete_in(session, report, "engagement", SalesforceEngagement.sent_message_id, sent)
    _unlink_events(session, events)
    _delete_in(session, report, "enrollment_transitions", EnrollmentTransition.enrollment_id,
               enrollments)  # fmt: skip
    _delete_in(session, report, "events", Event.id, events)
    _delete_in(session, report, "inbound_messages", InboundMessage.id, inbound)
    _delete_in(session, report, "one_off_attachments", OneOffAttachment.email_id, one_offs)
    _delete_in(session, report, "one_off_emails", OneOffEmail.id, one_offs)
    _delete_in(session, report, "sent_messages", SentMessage.id, sent)
    _delete_in(session, report, "enrollments", Enrollment.id, enrollments)
    _delete_other_references(session, prospect_id, report)
    _delete_in(session, report, "prospects", Prospect.id, [prospect_id])


def _unlink_events(session: Session, events: list[int]) -> None:
    """Other rows that merely point at an event going away keep themselves, not the link."""
    for chunk in _chunks(events):
        for model in (EnrollmentTransition, TrackingHit, DocumentVisit, SalesforceOutbox):
            session.execute(
                update(model)
                .where(model.event_id.in_(chunk))
                .values(event_id=None)
                .execution_options(synchronize_session=False)
            )


def _delete_other_references(session: Session, prospect_id: int, report: ErasureReport) -> None:
    """Rows of any other table that point at the prospect (the opt-out history, say)."""
    handled = {"enrollments", "sent_messages", "events", "document_links", "one_off_emails"}
    for table in Base.metadata.sorted_tables:
        if table.name in handled:
            continue
        for column in table.columns:
            if any(fk.column.table.name == "prospects" for fk in column.foreign_keys):
                result = session.execute(delete(table).where(column == prospect_id))
                count = int(result.rowcount or 0)  # type: ignore[attr-defined]
                report.deleted[table.name] = report.deleted.get(table.name, 0) + count


def _settle_outbox_report(session: Session, outbox: list[int], report: ErasureReport) -> None:
    for chunk in _chunks(outbox):
        rows = session.execute(
            select(SalesforceOutbox.status, SalesforceOutbox.salesforce_id).where(
                SalesforceOutbox.id.in_(chunk)
            )
        )
        for status, salesforce_id in rows:
            if status == OutboxStatus.DONE and salesforce_id:
                report.salesforce_tasks.append(str(salesforce_id))
            elif status == OutboxStatus.IN_FLIGHT:
                report.salesforce_in_flight += 1
            elif status != OutboxStatus.DONE:
                report.salesforce_dropped += 1


def _delete_outbox(session: Session, team_id: int, address: str, report: ErasureReport) -> None:
    """Tasks owed about the address (a one-off's, an unlinked event's): reported, deleted."""
    outbox = _ids(
        session,
        select(SalesforceOutbox.id).where(
            SalesforceOutbox.team_id == team_id, SalesforceOutbox.who_email == address
        ),
    )
    _settle_outbox_report(session, outbox, report)
    _delete_in(session, report, "salesforce_outbox", SalesforceOutbox.id, outbox)


def _delete_inbound_from(
    session: Session, team_id: int, address: str, report: ErasureReport
) -> None:
    """Their messages that answered someone else's email (a colleague's thread)."""
    inbound = _ids(
        session,
        select(InboundMessage.id).where(
            InboundMessage.team_id == team_id, InboundMessage.from_addr == address
        ),
    )
    events = _ids(session, select(Event.id).where(Event.inbound_message_id.in_(inbound)))
    outbox = _ids(
        session,
        select(SalesforceOutbox.id).where(SalesforceOutbox.event_id.in_(events)),
    )
    _settle_outbox_report(session, outbox, report)
    _delete_in(session, report, "salesforce_outbox", SalesforceOutbox.id, outbox)
    _unlink_events(session, events)
    _delete_in(session, report, "events", Event.id, events)
    _delete_in(session, report, "inbound_messages", InboundMessage.id, inbound)


def _text_columns(table: Table) -> list[Any]:
    return [c for c in table.columns if isinstance(c.type, String | JSON)]


def _patterns(needle: str) -> list[str]:
    """LIKE patterns for `needle` as stored: as is, and inside JSON (non-ASCII escaped)."""
    forms = dict.fromkeys([needle.lower(), json.dumps(needle)[1:-1].lower()])
    return [f"%{_like_escape(form)}%" for form in forms]


def _mention(needle: str) -> re.Pattern[str]:
    """`needle` as a whole address or name: dana@acme.test is not in xdana@acme.test.uk."""
    if "@" in needle:
        return re.compile(rf"(?<![\w.+\-]){re.escape(needle)}(?![\w\-]|\.\w)", re.IGNORECASE)
    return re.compile(rf"\b{re.escape(needle)}\b", re.IGNORECASE)


def _replace_mentions(session: Session, team_id: int, needles: list[str]) -> int:
    """Replace every mention of `needles` in the team's remaining rows; how many rows changed."""
    changed = 0
    team_tables = {t.name for t in Base.metadata.sorted_tables if "team_id" in t.columns}
    for table in Base.metadata.sorted_tables:
        if table.name in _NOT_SWEPT:
            continue
        columns = _text_columns(table)
        if not columns or not table.primary_key.columns:
            continue
        scope = _team_scope(table, team_id, team_tables)
        if scope is None:
            continue
        matches = [
            func.lower(cast(c, Text)).like(pattern, escape="\\")
            for c in columns
            for needle in needles
            for pattern in _patterns(needle)
        ]
        key = next(iter(table.primary_key.columns))
        rows = session.execute(select(key, *columns).where(scope, or_(*matches))).all()
        mentions = [_mention(n) for n in needles]
        for row in rows:
            scrubbed = {c.name: _scrub(row._mapping[c], mentions) for c in columns}
            values = {k: v for k, v in scrubbed.items() if v != row._mapping[table.c[k]]}
            if values:
                session.execute(update(table).where(key == row[0]).values(**values))
                changed += 1
    return changed


def _team_scope(table: Table, team_id: int, team_tables: set[str]) -> Any:
    """The condition that keeps a sweep inside the team, or None if it cannot say."""
    if "team_id" in table.columns:
        return table.c.team_id == team_id
    for column in table.columns:
        for fk in column.foreign_keys:
            parent = fk.column.table
            if parent.name in team_tables:
                return column.in_(select(fk.column).where(parent.c.team_id == team_id))
    return None


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _scrub(value: Any, mentions: list[re.Pattern[str]]) -> Any:
    if isinstance(value, str):
        for mention in mentions:
            value = mention.sub(ERASED, value)
        return value
    if isinstance(value, dict):
        return {_scrub(k, mentions): _scrub(v, mentions) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, mentions) for v in value]
    return value


def _forget_cached_salesforce_answer(address: str) -> None:
    """The resolver caches Contact/Lead answers in Redis under keys that hold the address."""
    pattern = "sightline:sf:who:*:" + re.sub(r"([*?\[\]\\])", r"\\\1", address)
    try:
        client = get_redis()
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    except RedisError as exc:
        # The entries expire within a day; the erasure itself must not fail for them.
        log.warning("erasure_cache_not_cleared error=%s", type(exc).__name__)
