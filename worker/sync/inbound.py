"""One inbound message that may answer ours: classify, match, record, apply the rule.

Everything a match causes happens in one transaction, guarded by natural keys:

    InboundMessage (mailbox, provider id)      insert-or-ignore
    Event (kind, sent message, inbound id)     insert-or-ignore ── new? ──▶ rule + outbox
      reply       → enrollment replied (or opted_out for "please remove me")
      auto_reply  → enrollment paused until the return date, then resumed
      bounce      → hard: bounced, address undeliverable;  soft: recorded only
      complaint   → opted out

The event key names the inbound message by its RFC Message-ID, so the same reply
seen twice (a re-run sync, a UIDVALIDITY rebuild, a CC'd teammate's mailbox) is
recorded once and its consequences applied once.

Who wrote a reply does not matter: the prospect, a colleague at another address,
someone on CC. What matters is that it names a Message-ID we sent. The one
exception is the mailbox owner's own messages (a copy of ours, or the salesperson
following up by hand), which are not replies.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.events import insert_ignore, natural_key, queue_salesforce_task, record_event
from core.models import (
    Enrollment,
    EnrollmentState,
    InboundMessage,
    Prospect,
    SendStatus,
    SentMessage,
    utcnow,
)
from worker.matching.classify import Classification, classify_message
from worker.matching.matcher import find_sent_messages
from worker.sequences.engine import DESCRIPTION_LIMIT, transition
from worker.sync.base import HeaderSummary

log = logging.getLogger(__name__)

# An out-of-office that gives no return date pauses the enrolment this long.
DEFAULT_PAUSE = timedelta(days=3)
# Auto-replies that name none of our ids are matched by sender within this window.
AUTO_REPLY_MATCH_WINDOW = timedelta(days=30)

_LIVE = frozenset({EnrollmentState.ACTIVE, EnrollmentState.PAUSED})


@dataclass(frozen=True)
class MailboxRef:
    id: int
    team_id: int
    email: str


@dataclass(frozen=True)
class Outcome:
    status: str  # recorded, duplicate, unmatched, own, ignored
    kind: str | None = None
    sent_message_id: int | None = None
    event_id: int | None = None


def handle_inbound(
    session: Session, mailbox: MailboxRef, summary: HeaderSummary, raw: bytes
) -> Outcome:
    """Classify `raw` and record what it means. The caller owns the transaction."""
    if summary.from_addr and summary.from_addr == mailbox.email.lower():
        return Outcome("own")
    classification = classify_message(raw)
    refs = list(dict.fromkeys([*classification.refers_to, *summary.candidates]))
    known = find_sent_messages(session, mailbox.team_id, [*refs, *_own_id(summary)])
    if summary.rfc_message_id and summary.rfc_message_id in known:
        return Outcome("own")  # our own sent copy, filed where the sync looks
    sent = next((known[r] for r in refs if r in known), None)
    if sent is None and classification.kind == "auto_reply" and summary.from_addr:
        sent = _latest_sent_to(session, mailbox, summary.from_addr)
    if sent is None:
        return Outcome("unmatched", classification.kind)
    if classification.kind == "other":
        return Outcome("ignored", "other", sent.id)
    return _record(session, mailbox, summary, classification, sent)


def _own_id(summary: HeaderSummary) -> list[str]:
    return [summary.rfc_message_id] if summary.rfc_message_id else []


def _latest_sent_to(session: Session, mailbox: MailboxRef, address: str) -> SentMessage | None:
    prospect_id = session.scalar(
        select(Prospect.id).where(Prospect.team_id == mailbox.team_id, Prospect.email == address)
    )
    if prospect_id is None:
        return None
    return session.scalar(
        select(SentMessage)
        .where(
            SentMessage.prospect_id == prospect_id,
            SentMessage.mailbox_id == mailbox.id,
            SentMessage.status == SendStatus.SENT,
            SentMessage.sent_at >= utcnow() - AUTO_REPLY_MATCH_WINDOW,
        )
        .order_by(SentMessage.sent_at.desc())
        .limit(1)
    )


def _record(
    session: Session,
    mailbox: MailboxRef,
    summary: HeaderSummary,
    classification: Classification,
    sent: SentMessage,
) -> Outcome:
    now = utcnow()
    kind = classification.kind
    details = _details(classification)
    inbound_id = _insert_inbound(session, mailbox, summary, classification, sent, details, now)
    event_key = natural_key(kind, sent.id, summary.rfc_message_id or summary.provider_id)
    event_id = record_event(
        session,
        team_id=mailbox.team_id,
        key=event_key,
        kind=kind,
        occurred_at=summary.received_at or now,
        sent_message_id=sent.id,
        enrollment_id=sent.enrollment_id,
        prospect_id=sent.prospect_id,
        inbound_message_id=inbound_id,
        data={"from": summary.from_addr, "subject": summary.subject, **details},
    )
    if event_id is None:
        return Outcome("duplicate", kind, sent.id)
    _apply_rule(session, sent, classification, event_id, summary, now)
    if kind == "reply":
        _owe_reply_task(session, sent, summary, classification, event_id, now)
    log.info(
        "inbound_recorded mailbox_id=%s kind=%s sent_id=%s event_id=%s",
        mailbox.id,
        kind,
        sent.id,
        event_id,
    )
    return Outcome("recorded", kind, sent.id, event_id)


def _insert_inbound(
    session: Session,
    mailbox: MailboxRef,
    summary: HeaderSummary,
    classification: Classification,
    sent: SentMessage,
    details: dict[str, Any],
    now: datetime,
) -> int:
    """The inbound row's id, inserting it unless this mailbox already has it."""
    inserted = insert_ignore(
        session,
        InboundMessage.__table__,  # type: ignore[arg-type]
        {
            "team_id": mailbox.team_id,
            "mailbox_id": mailbox.id,
            "provider_id": summary.provider_id,
            "rfc_message_id": summary.rfc_message_id,
            "sent_message_id": sent.id,
            "kind": classification.kind,
            "from_addr": summary.from_addr,
            "subject": (summary.subject or "")[:998],
            "text": classification.text,
            "details": details,
            "quarantined": False,
            "received_at": summary.received_at,
            "created_at": now,
        },
        ["mailbox_id", "provider_id"],
    )
    if inserted is not None:
        return inserted
    return int(
        session.scalars(
            select(InboundMessage.id).where(
                InboundMessage.mailbox_id == mailbox.id,
                InboundMessage.provider_id == summary.provider_id,
            )
        ).one()
    )


def _details(classification: Classification) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if classification.bounce_recipients:
        details["bounce"] = [
            {"address": r.address, "status": r.status, "hard": r.hard}
            for r in classification.bounce_recipients
        ]
    if classification.kind == "auto_reply":
        until = classification.auto_reply_until
        details["until"] = until.isoformat() if until else None
    if classification.unsubscribe_request:
        details["unsubscribe"] = True
    return details


def _apply_rule(
    session: Session,
    sent: SentMessage,
    classification: Classification,
    event_id: int,
    summary: HeaderSummary,
    now: datetime,
) -> None:
    if sent.enrollment_id is None:
        return
    kind = classification.kind
    who = summary.from_addr or "unknown sender"
    if kind == "reply" and classification.unsubscribe_request:
        _opt_out(session, sent, event_id, f"asked to be removed ({who})", now)
    elif kind == "reply":
        transition(
            session,
            sent.enrollment_id,
            EnrollmentState.REPLIED,
            f"reply from {who}",
            from_states=_LIVE,
            event_id=event_id,
            now=now,
            next_step_at=None,
        )
    elif kind == "complaint":
        _opt_out(session, sent, event_id, f"spam complaint via {who}", now)
    elif kind == "bounce":
        if any(r.hard for r in classification.bounce_recipients) or not (
            classification.bounce_recipients
        ):
            statuses = ", ".join(r.status for r in classification.bounce_recipients if r.status)
            _hard_bounce(session, sent, event_id, f"hard bounce {statuses}".strip(), now)
    elif kind == "auto_reply":
        until = classification.auto_reply_until
        resume = (
            datetime.combine(until, time(8, 0), tzinfo=UTC)
            if isinstance(until, date) and until > now.date()
            else now + DEFAULT_PAUSE
        )
        transition(
            session,
            sent.enrollment_id,
            EnrollmentState.PAUSED,
            f"auto-reply from {who}; resumes {resume:%Y-%m-%d}",
            from_states={EnrollmentState.ACTIVE},
            event_id=event_id,
            now=now,
            resume_at=resume,
        )


def _stop_all(
    session: Session,
    prospect_id: int,
    to_state: EnrollmentState,
    reason: str,
    event_id: int,
    now: datetime,
) -> None:
    ids = session.scalars(
        select(Enrollment.id).where(
            Enrollment.prospect_id == prospect_id, Enrollment.state.in_(list(_LIVE))
        )
    ).all()
    for enrollment_id in ids:
        transition(
            session,
            enrollment_id,
            to_state,
            reason,
            from_states=_LIVE,
            event_id=event_id,
            now=now,
            next_step_at=None,
        )


def _opt_out(
    session: Session, sent: SentMessage, event_id: int, reason: str, now: datetime
) -> None:
    if sent.prospect_id is None:
        return
    session.execute(
        update(Prospect)
        .where(Prospect.id == sent.prospect_id, Prospect.opted_out_at.is_(None))
        .values(opted_out_at=now)
    )
    _stop_all(session, sent.prospect_id, EnrollmentState.OPTED_OUT, reason, event_id, now)


def _hard_bounce(
    session: Session, sent: SentMessage, event_id: int, reason: str, now: datetime
) -> None:
    if sent.prospect_id is None:
        return
    session.execute(
        update(Prospect)
        .where(Prospect.id == sent.prospect_id, Prospect.undeliverable_at.is_(None))
        .values(undeliverable_at=now)
    )
    _stop_all(session, sent.prospect_id, EnrollmentState.BOUNCED, reason, event_id, now)


def _owe_reply_task(
    session: Session,
    sent: SentMessage,
    summary: HeaderSummary,
    classification: Classification,
    event_id: int,
    now: datetime,
) -> None:
    prospect = session.get(Prospect, sent.prospect_id) if sent.prospect_id else None
    if prospect is None:
        return
    subject = summary.subject or sent.subject
    description = (
        f"From: {summary.from_addr or 'unknown'}\nSubject: {subject}\n"
        f"In reply to: {sent.subject}\n\n{classification.text or ''}"
    )
    queue_salesforce_task(
        session,
        team_id=sent.team_id,
        key=natural_key("task", "reply", event_id),
        kind="task_reply",
        who_email=prospect.email,
        event_id=event_id,
        payload={
            "subject": f"Reply: {subject}"[:255],
            "description": description[:DESCRIPTION_LIMIT],
            "activity_date": (summary.received_at or now).date().isoformat(),
            "message_id": summary.rfc_message_id,
        },
    )


def quarantine(session: Session, mailbox: MailboxRef, summary: HeaderSummary, error: str) -> None:
    """Keep a message we could not handle where a person can see it."""
    insert_ignore(
        session,
        InboundMessage.__table__,  # type: ignore[arg-type]
        {
            "team_id": mailbox.team_id,
            "mailbox_id": mailbox.id,
            "provider_id": summary.provider_id,
            "rfc_message_id": summary.rfc_message_id,
            "kind": "unparsable",
            "from_addr": summary.from_addr,
            "subject": (summary.subject or "")[:998],
            "quarantined": True,
            "error": error[:4000],
            "received_at": summary.received_at,
            "created_at": utcnow(),
            "details": {},
        },
        ["mailbox_id", "provider_id"],
    )
