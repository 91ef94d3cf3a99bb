"""One inbound message that may answer ours: classify, match, record, apply the rule.

Everything a match causes happens in one transaction, guarded by natural keys:

    InboundMessage (mailbox, provider id)      insert-or-ignore
    Event (signal, sent message, inbound id)   insert-or-ignore ── new? ──▶ rule + outbox

The signal (reply, complaint, bounce, soft_bounce, delayed, auto_reply) and
what it does to the sequence are decided in ``worker.sequences.rules``; this
module finds which message of ours an inbound message is about and records it.

The event key names the inbound message by its RFC Message-ID, so the same reply
seen twice (a re-run sync, a UIDVALIDITY rebuild, a CC'd teammate's mailbox) is
recorded once and its consequences applied once.

Who wrote a reply does not matter: the prospect, a colleague of theirs at another
address, someone on CC. What matters is that it names a Message-ID we sent. The
exceptions are on our side of the conversation: the mailbox owner's own messages
(a copy of ours, or the salesperson following up by hand) are not replies at
all, and a teammate's answer in the thread (``is_teammate``: a manager's "let me
know how it goes" on reply-all) is recorded but never halts the sequence. A
message that is neither (a success notice, a read receipt) is recorded as
``other`` and changes nothing. Auto-replies and bounces that name
none of our Message-IDs (some MTAs attach nothing) are matched by address: the
latest message this mailbox sent to the sender (auto-reply) or to a failed
recipient (bounce) within 30 days.

A reply whose client dropped its threading headers is matched by the provider's
thread, or on IMAP by subject and participants (``worker.matching.threads``,
which says when each applies). The rules are tried in order and the event's data
says which one matched (``matched_by``)::

    references   In-Reply-To/References (or a report's attached headers) name ours
    thread       the provider threaded it with ours (Gmail threadId, conversation id)
    subject      IMAP: same normalised subject, from someone we sent it to, in the window
    address      an auto-reply or bounce from/about an address we recently wrote to

A message that cannot be classified within its time budget (or at all) is
quarantined (``worker.sync.quarantine``): kept, shown, tried again later. It is
never read as ``other``: that would let the sequence go on as if nobody had
answered. When it is read at last, its quarantined row becomes what it is.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from config import get_settings
from core.events import insert_ignore, natural_key, queue_salesforce_task, record_event
from core.mail_domains import domain_of, is_free_mail
from core.models import (
    InboundMessage,
    Mailbox,
    OptOutSource,
    Prospect,
    SendStatus,
    SentMessage,
    User,
    utcnow,
)
from worker.matching.budget import DEFAULT_BUDGET_SECONDS
from worker.matching.classify import Classification, classify_message
from worker.matching.matcher import find_sent_messages, is_unsubscribe_mail
from worker.matching.threads import find_by_subject, find_by_thread, threads_with_sent
from worker.salesforce.task_limits import DESCRIPTION_LIMIT
from worker.sequences.optouts import opt_out
from worker.sequences.rules import apply_signal
from worker.sequences.send_windows import resume_timing
from worker.sequences.signals import Signal, read_signal
from worker.sync import quarantine as held
from worker.sync.base import HeaderSummary

log = logging.getLogger(__name__)

# Auto-replies and bounces that name none of our ids are matched by address
# within this window.
ADDRESS_MATCH_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class MailboxRef:
    id: int
    team_id: int
    email: str


@dataclass(frozen=True)
class Outcome:
    status: str  # recorded, duplicate, unmatched, own, ignored, quarantined
    kind: str | None = None
    sent_message_id: int | None = None
    event_id: int | None = None


def handle_inbound(
    session: Session,
    mailbox: MailboxRef,
    summary: HeaderSummary,
    raw: bytes,
    *,
    budget: float | None = DEFAULT_BUDGET_SECONDS,
) -> Outcome:
    """Classify `raw` (within `budget` seconds; None: no budget) and record what it means.

    The caller owns the transaction. Over budget, or unreadable, the message is
    quarantined for a later try (status ``quarantined``).
    """
    summary = storable_summary(summary)
    if summary.from_addr and summary.from_addr == mailbox.email.lower():
        return Outcome("own")
    classification = classify_message(raw, budget=budget)
    if classification.kind == "quarantined":
        reason = classification.reason or "could not be classified"
        quarantine(session, mailbox, summary, reason, retry=True, kind="quarantined")
        log.warning(
            "inbound_quarantined mailbox_id=%s provider_id=%s reason=%s",
            mailbox.id,
            summary.provider_id,
            reason,
        )
        return Outcome("quarantined", "quarantined")
    classification = replace(classification, text=_storable(classification.text))
    refs = list(dict.fromkeys([*classification.refers_to, *summary.candidates]))
    known = find_sent_messages(session, mailbox.team_id, [*refs, *_own_id(summary)])
    if summary.rfc_message_id and summary.rfc_message_id in known:
        return Outcome("own")  # our own sent copy, filed where the sync looks
    sent, matched_by = next((known[r] for r in refs if r in known), None), "references"
    if sent is None:
        sent, matched_by = match_without_references(session, mailbox, summary)
    if sent is None and classification.kind == "auto_reply" and summary.from_addr:
        sent, matched_by = _latest_sent_to(session, mailbox, summary.from_addr), "address"
    if sent is None and classification.kind == "bounce":
        for recipient in classification.bounce_recipients:
            sent, matched_by = _latest_sent_to(session, mailbox, recipient.address), "address"
            if sent is not None:
                break
    if sent is None and classification.unsubscribe_request and is_unsubscribe_mail(summary):
        # List-Unsubscribe's mailto: unthreaded, so matched by address like an auto-reply.
        sent, matched_by = _latest_sent_to(session, mailbox, summary.from_addr or ""), "address"
        if sent is None:
            return _opt_out_sender(session, mailbox, summary)
    if sent is None:
        return Outcome("unmatched", classification.kind)
    return _record(session, mailbox, summary, classification, sent, matched_by)


def _opt_out_sender(session: Session, mailbox: MailboxRef, summary: HeaderSummary) -> Outcome:
    """A mailto unsubscribe from a prospect we wrote to longer ago than the address
    window: no message to record it on, but the request is honoured all the same."""
    address = (summary.from_addr or "").lower()
    known = session.scalar(
        select(Prospect.id).where(Prospect.team_id == mailbox.team_id, Prospect.email == address)
    )
    if known is None:
        return Outcome("unmatched", "reply")  # not someone we email: nothing to stop
    opt_out(
        session,
        team_id=mailbox.team_id,
        email=address,
        reason=f"asked to be removed ({address}, by email to {mailbox.email})",
        source=OptOutSource.REPLY,
        now=utcnow(),
    )
    return Outcome("recorded", "opt_out")


def match_without_references(
    session: Session, mailbox: MailboxRef, summary: HeaderSummary
) -> tuple[SentMessage | None, str]:
    """What we sent that `summary` answers by thread or subject, and which rule said so.

    The provider's thread when it has one; else (IMAP) the subject rule, and
    only for a message that names no Message-ID at all (worker.matching.threads).
    """
    if summary.thread_id is not None:
        found = find_by_thread(session, mailbox.id, [summary.thread_id])
        return found.get(summary.thread_id), "thread"
    if summary.candidates:
        return None, "subject"
    days = get_settings().providers.subject_match_days
    return find_by_subject(
        session,
        team_id=mailbox.team_id,
        mailbox_id=mailbox.id,
        sender=summary.from_addr,
        subject=summary.subject,
        since=utcnow() - timedelta(days=days),
    ), "subject"


def answers_without_references(
    session: Session, mailbox: MailboxRef, summaries: list[HeaderSummary]
) -> set[str]:
    """Provider ids of the messages that answer ours by thread or subject only.

    One lookup for the batch's threads; the subject rule (IMAP, messages naming
    no Message-ID) one indexed lookup per such message. Own messages are skipped
    here as `handle_inbound` would call them "own".
    """
    owner = mailbox.email.lower()
    summaries = [s for s in summaries if (s.from_addr or "") != owner]
    threaded = threads_with_sent(
        session, mailbox.id, [s.thread_id for s in summaries if s.thread_id]
    )
    found = {s.provider_id for s in summaries if s.thread_id in threaded}
    for summary in summaries:
        if summary.thread_id is None and not summary.candidates:
            sent, _ = match_without_references(session, mailbox, summary)
            if sent is not None:
                found.add(summary.provider_id)
    return found


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` without NUL characters, each lone surrogate made U+FFFD.

    Mail from the internet may carry NUL bytes (a broken mailer, a mislabelled
    UTF-16 part), and text decoded with ``surrogateescape`` (an exception's
    message about it, say) lone surrogates. PostgreSQL refuses the first, UTF-8
    the second; a reply that cannot be stored is a reply that does not stop its
    sequence.
    """
    return _LONE_SURROGATE.sub("\ufffd", text.replace("\x00", ""))


def _storable(value: Any) -> Any:
    """`value` with ``storable_text`` applied to every string, in nested dicts and lists too."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_storable(v) for v in value)
    return value


def storable_summary(summary: HeaderSummary) -> HeaderSummary:
    """The summary with the text we store (subject, sender) free of NUL characters."""
    return replace(
        summary,
        subject=_storable(summary.subject),
        from_addr=_storable(summary.from_addr),
        provider_id=_storable(summary.provider_id),
        rfc_message_id=_storable(summary.rfc_message_id),
    )


def is_teammate(
    session: Session, team_id: int, address: str | None, prospect_email: str | None
) -> bool:
    """True if ``address`` belongs to the team rather than to the prospect's side.

    A teammate is a user or a mailbox of the team, or any address at a domain
    the team's users and mailboxes use, unless that domain is a free-mail
    provider (two gmail.com addresses are not colleagues). The prospect's own
    address always counts as the prospect, even at the team's domain.
    """
    address = (address or "").strip().lower()
    if not address or address == (prospect_email or "").lower():
        return False
    own = {
        str(a).lower()
        for a in [
            *session.scalars(select(User.email).where(User.team_id == team_id)),
            *session.scalars(select(Mailbox.email).where(Mailbox.team_id == team_id)),
        ]
    }
    if address in own:
        return True
    domains = {domain_of(a) for a in own} - {""}
    domain = domain_of(address)
    return domain in domains and not is_free_mail(domain)


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
            SentMessage.sent_at >= utcnow() - ADDRESS_MATCH_WINDOW,
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
    matched_by: str,
) -> Outcome:
    now = utcnow()
    prospect = session.get(Prospect, sent.prospect_id) if sent.prospect_id else None
    others = frozenset(a.lower() for a in [*sent.to_addrs, *sent.cc_addrs])
    prospect_email = prospect.email if prospect else None
    signal = read_signal(
        classification,
        prospect_email,
        now,
        other_recipients=others,
        from_teammate=classification.kind in ("reply", "auto_reply")
        and is_teammate(session, mailbox.team_id, summary.from_addr, prospect_email),
        resume_in=resume_timing(session, sent) if classification.kind == "auto_reply" else None,
    )
    signal = replace(signal, data={**_storable(signal.data), "matched_by": matched_by})
    inbound_id = _insert_inbound(session, mailbox, summary, classification, sent, signal, now)
    event_key = natural_key(signal.kind, sent.id, summary.rfc_message_id or summary.provider_id)
    event_id = record_event(
        session,
        team_id=mailbox.team_id,
        key=event_key,
        kind=signal.kind,
        occurred_at=summary.received_at or now,
        sent_message_id=sent.id,
        enrollment_id=sent.enrollment_id,
        prospect_id=sent.prospect_id,
        inbound_message_id=inbound_id,
        data={"from": summary.from_addr, "subject": summary.subject, **signal.data},
    )
    if event_id is None:
        return Outcome("duplicate", signal.kind, sent.id)
    who = summary.from_addr or "unknown sender"
    apply_signal(session, signal, sent, event_id, who=who, now=now)
    if signal.kind == "reply":
        _owe_reply_task(session, sent, summary, classification, event_id, now)
    log.info(
        "inbound_recorded mailbox_id=%s kind=%s signal=%s sent_id=%s event_id=%s matched_by=%s",
        mailbox.id,
        classification.kind,
        signal.kind,
        sent.id,
        event_id,
        matched_by,
    )
    return Outcome("recorded", signal.kind, sent.id, event_id)


def _insert_inbound(
    session: Session,
    mailbox: MailboxRef,
    summary: HeaderSummary,
    classification: Classification,
    sent: SentMessage,
    signal: Signal,
    now: datetime,
) -> int:
    """The inbound row's id, inserting it unless this mailbox already has it.

    A row the message was quarantined in becomes what the message is.
    """
    details: dict[str, Any] = {"signal": signal.kind, **signal.data}
    values: dict[str, Any] = {
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
        "error": None,
        "received_at": summary.received_at,
        "created_at": now,
    }
    inserted = insert_ignore(
        session,
        InboundMessage.__table__,  # type: ignore[arg-type]
        values,
        ["mailbox_id", "provider_id"],
    )
    if inserted is not None:
        return inserted
    existing = session.execute(
        select(InboundMessage.id, InboundMessage.quarantined).where(
            InboundMessage.mailbox_id == mailbox.id,
            InboundMessage.provider_id == summary.provider_id,
        )
    ).one()
    if existing.quarantined:
        session.execute(
            update(InboundMessage)
            .where(InboundMessage.id == existing.id)
            .values({k: v for k, v in values.items() if k != "created_at"})
        )
    return int(existing.id)


def _owe_reply_task(
    session: Session,
    sent: SentMessage,
    summary: HeaderSummary,
    classification: Classification,
    event_id: int,
    now: datetime,
) -> None:
    prospect = session.get(Prospect, sent.prospect_id) if sent.prospect_id else None
    # Mail sent from Gmail/Outlook to several people is no one prospect's: whoever answered.
    who = prospect.email if prospect else (summary.from_addr if sent.origin else None)
    if who is None:
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
        who_email=who,
        event_id=event_id,
        payload={
            "subject": f"Reply: {subject}"[:255],
            "description": description[:DESCRIPTION_LIMIT],
            "activity_date": (summary.received_at or now).date().isoformat(),
            "message_id": summary.rfc_message_id,
        },
    )


def quarantine(
    session: Session,
    mailbox: MailboxRef,
    summary: HeaderSummary,
    error: str,
    *,
    retry: bool = False,
    kind: str = "unparsable",
) -> None:
    """Keep a message we could not handle where a person can see it.

    With ``retry`` it is tried again later (``worker.sync.quarantine``).
    """
    held.keep(
        session,
        team_id=mailbox.team_id,
        mailbox_id=mailbox.id,
        summary=storable_summary(summary),
        kind=kind,
        reason=_storable(error),
        retry=retry,
        now=utcnow(),
    )
