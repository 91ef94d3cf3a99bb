"""Sequence steps: enrolling, claiming a due step, handing it over, state changes.

The rule this module exists to keep: **a step is never sent after a reply was
recorded.** Two conditional UPDATEs on the enrolment row meet:

- claiming step n:   ``UPDATE enrollments SET next_step = n+1, next_step_at = NULL
                       WHERE id = :id AND state = 'active' AND next_step = n
                       AND next_step_at <= now``  (then the SentMessage row is
                       inserted in the same transaction)
- recording a reply: ``UPDATE enrollments SET state = 'replied'
                       WHERE id = :id AND state IN ('active', 'paused')``

Both take the row's lock (PostgreSQL) or the database's write lock (SQLite), so
one waits for the other and re-checks its WHERE clause: if the reply committed
first, the claim finds nothing. If the claim committed first, `deliver` re-reads
the state just before the hand-over and cancels the message instead of sending.
The only window left is the provider call itself.

A claimed step is a `SentMessage` in status ``sending``; its Message-ID is fixed at
claim time, so a retried hand-over re-sends the *same* message (mail systems
de-duplicate by Message-ID), and when a previous attempt may have got through,
`deliver` first asks the provider whether the message is already in Sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from redis.exceptions import RedisError
from rq.timeouts import JobTimeoutException
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from config import get_settings
from core.crypto import decrypt_json
from core.db import session_scope
from core.events import natural_key, queue_salesforce_task, record_event
from core.header_text import flatten_header_text
from core.models import (
    FINAL_STATES,
    Enrollment,
    EnrollmentState,
    EnrollmentTransition,
    Mailbox,
    MailboxStatus,
    Prospect,
    SendStatus,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    User,
    utcnow,
)
from core.templates import render_all
from core.tracking.html import apply_tracking
from core.tracking.tokens import now_seconds
from worker.documents.outgoing import documents_for_message
from worker.sequences.render import html_to_text, placeholder_values, render_template
from worker.sync.base import Attachment, OutgoingMessage, ProviderError, SendResult
from worker.sync.credentials import credential_saver
from worker.sync.mime import MessageBuildError, check_message, new_message_id
from worker.sync.registry import open_provider

log = logging.getLogger(__name__)

# Ceiling for Task descriptions and stored excerpts (Salesforce allows 32,000).
DESCRIPTION_LIMIT = 32_000


class EnrollmentError(ValueError):
    """An enrolment request that cannot be honoured (the message says why)."""


def enroll(
    session: Session, *, sequence: Sequence, email: str, name: str | None, now: datetime
) -> Enrollment:
    """Enrol `email` in `sequence`, creating the prospect if new.

    Raises:
        EnrollmentError: the sequence has no steps, the prospect opted out or is
            undeliverable, or is already enrolled in this sequence.
    """
    email = email.strip().lower()
    if not sequence.steps:
        raise EnrollmentError("sequence has no steps")
    prospect = session.scalar(
        select(Prospect).where(Prospect.team_id == sequence.team_id, Prospect.email == email)
    )
    if prospect is None:
        prospect = Prospect(team_id=sequence.team_id, email=email, name=name)
        session.add(prospect)
        session.flush()
    elif name and not prospect.name:
        prospect.name = name
    if prospect.opted_out_at is not None:
        raise EnrollmentError(f"{email} opted out on {prospect.opted_out_at:%Y-%m-%d}")
    if prospect.undeliverable_at is not None:
        raise EnrollmentError(f"{email} is undeliverable (hard bounce)")
    existing = session.scalar(
        select(Enrollment).where(
            Enrollment.sequence_id == sequence.id, Enrollment.prospect_id == prospect.id
        )
    )
    if existing is not None:
        raise EnrollmentError(f"{email} is already enrolled in this sequence (#{existing.id})")
    enrollment = Enrollment(
        team_id=sequence.team_id,
        sequence_id=sequence.id,
        prospect_id=prospect.id,
        state=EnrollmentState.ACTIVE,
        state_reason="enrolled",
        state_changed_at=now,
        next_step=0,
        next_step_at=now + timedelta(seconds=sequence.steps[0].delay_seconds),
        steps_sent=0,
        created_at=now,
    )
    session.add(enrollment)
    session.flush()
    session.add(
        EnrollmentTransition(
            enrollment_id=enrollment.id,
            from_state="new",
            to_state="active",
            reason="enrolled",
            at=now,
        )
    )
    return enrollment


def enroll_many(
    session: Session,
    *,
    sequence: Sequence,
    people: list[tuple[str, str | None, str | None]],
    now: datetime,
) -> int:
    """Enrol (email, name, company) people in `sequence` at once: a CSV import.

    The same rules as `enroll`, in a few statements rather than a few per person,
    all in the caller's transaction: all of them are enrolled, or (an error) none.
    New prospects are created; known ones keep their name and company, blanks
    filled in. Returns how many were enrolled.

    Raises:
        EnrollmentError: no steps, or the first address that is opted out,
            undeliverable, or already enrolled in this sequence.
    """
    if not sequence.steps:
        raise EnrollmentError("sequence has no steps")
    wanted = {email.strip().lower(): (name, company) for email, name, company in people}
    if not wanted:
        return 0
    addresses = list(wanted)
    known = _known_prospects(session, sequence.team_id, addresses)
    for email, prospect in known.items():
        _check_enrollable(prospect)
        name, company = wanted[email]
        if name and not prospect.name:
            prospect.name = name
        if company and not prospect.company:
            prospect.company = company
    new = [
        {"team_id": sequence.team_id, "email": e, "name": n, "company": c, "created_at": now}
        for e, (n, c) in wanted.items()
        if e not in known
    ]
    if new:
        session.execute(insert(Prospect), new)
    ids: dict[int, str] = {}
    for start in range(0, len(addresses), 500):
        chunk = addresses[start : start + 500]
        rows = session.execute(
            select(Prospect.id, Prospect.email).where(
                Prospect.team_id == sequence.team_id, Prospect.email.in_(chunk)
            )
        )
        ids.update({int(i): str(e) for i, e in rows})
        already = session.scalar(
            select(Prospect.email)
            .join(Enrollment, Enrollment.prospect_id == Prospect.id)
            .where(Enrollment.sequence_id == sequence.id, Prospect.email.in_(chunk))
            .limit(1)
        )
        if already is not None:
            raise EnrollmentError(f"{already} is already enrolled in this sequence")
    first_due = now + timedelta(seconds=sequence.steps[0].delay_seconds)
    session.execute(
        insert(Enrollment),
        [
            {
                "team_id": sequence.team_id,
                "sequence_id": sequence.id,
                "prospect_id": prospect_id,
                "state": EnrollmentState.ACTIVE,
                "state_reason": "enrolled",
                "state_changed_at": now,
                "next_step": 0,
                "next_step_at": first_due,
                "steps_sent": 0,
                "created_at": now,
            }
            for prospect_id in ids
        ],
    )
    prospect_ids = list(ids)
    enrollment_ids: list[int] = []
    for start in range(0, len(prospect_ids), 500):
        enrollment_ids.extend(
            int(i)
            for i in session.scalars(
                select(Enrollment.id).where(
                    Enrollment.sequence_id == sequence.id,
                    Enrollment.prospect_id.in_(prospect_ids[start : start + 500]),
                )
            )
        )
    session.execute(
        insert(EnrollmentTransition),
        [
            {
                "enrollment_id": enrollment_id,
                "from_state": "new",
                "to_state": "active",
                "reason": "enrolled",
                "at": now,
            }
            for enrollment_id in enrollment_ids
        ],
    )
    log.info("enrolled_many sequence_id=%s count=%s", sequence.id, len(enrollment_ids))
    return len(enrollment_ids)


def _known_prospects(session: Session, team_id: int, emails: list[str]) -> dict[str, Prospect]:
    known: dict[str, Prospect] = {}
    for start in range(0, len(emails), 500):
        chunk = emails[start : start + 500]
        for prospect in session.scalars(
            select(Prospect).where(Prospect.team_id == team_id, Prospect.email.in_(chunk))
        ):
            known[prospect.email] = prospect
    return known


def _check_enrollable(prospect: Prospect) -> None:
    if prospect.opted_out_at is not None:
        raise EnrollmentError(f"{prospect.email} opted out on {prospect.opted_out_at:%Y-%m-%d}")
    if prospect.undeliverable_at is not None:
        raise EnrollmentError(f"{prospect.email} is undeliverable (hard bounce)")


def transition(
    session: Session,
    enrollment_id: int,
    to_state: EnrollmentState,
    reason: str,
    *,
    from_states: frozenset[str] | set[str],
    event_id: int | None = None,
    now: datetime | None = None,
    **values: Any,
) -> bool:
    """Move an enrolment to `to_state` if it is in one of `from_states`.

    Returns False when another process got there first (or the state is not one
    we may leave). The transition and its reason are recorded.
    """
    now = now or utcnow()
    current = session.scalar(select(Enrollment.state).where(Enrollment.id == enrollment_id))
    result = session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id, Enrollment.state.in_(list(from_states)))
        .values(state=to_state, state_reason=reason, state_changed_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(
        EnrollmentTransition(
            enrollment_id=enrollment_id,
            from_state=current or "?",
            to_state=to_state,
            reason=reason[:2000],
            event_id=event_id,
            at=now,
        )
    )
    return True


def claim_due_step(session: Session, enrollment_id: int, now: datetime) -> SentMessage | None:
    """Claim the enrolment's next step if it is due. None if nothing to claim.

    Must run in its own transaction; the caller commits.
    """
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        return None
    position = enrollment.next_step
    # The conditional UPDATE comes before any other write: it is the lock.
    claimed = session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == enrollment_id,
            Enrollment.state == EnrollmentState.ACTIVE,
            Enrollment.next_step == position,
            Enrollment.next_step_at <= now,
        )
        .values(next_step=position + 1, next_step_at=None)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.refresh(enrollment)
    sequence = session.get_one(Sequence, enrollment.sequence_id)
    step = next((s for s in sequence.steps if s.position == position), None)
    if step is None:
        transition(
            session,
            enrollment.id,
            EnrollmentState.FINISHED,
            "no more steps",
            from_states={EnrollmentState.ACTIVE},
            now=now,
        )
        return None
    mailbox = session.get_one(Mailbox, sequence.mailbox_id)
    prospect = session.get_one(Prospect, enrollment.prospect_id)
    sender_name = _sender_name(session, mailbox)
    # A value the step needs and the prospect lacks is never sent as a gap or as
    # raw braces: the enrolment waits, paused, with the reason (core.templates).
    values = placeholder_values(prospect, mailbox, sender_name)
    _, blocked = render_all([(step.subject, False), (step.body_html, True)], values)
    if blocked:
        _hold_for_missing_values(session, enrollment.id, position, blocked, now)
        return None
    previous = _previous_sent(session, enrollment.id, position) if step.same_thread else None
    # A step re-scheduled after a soft bounce goes out again as a new attempt.
    attempt = session.scalar(
        select(func.count())
        .select_from(SentMessage)
        .where(SentMessage.enrollment_id == enrollment.id, SentMessage.step_position == position)
    )
    first_subject = sequence.steps[0].subject
    # A filled-in value (a prospect's name with a line break, from an import or
    # Salesforce) is made one line here rather than breaking the message later.
    subject = flatten_header_text(
        render_template(step.subject, prospect, mailbox, sender_name=sender_name)
    ).strip()
    references: list[str] = []
    in_reply_to = None
    if previous is not None:
        in_reply_to = previous.message_id
        references = [*(previous.references or "").split(), previous.message_id]
        if not subject:
            base = previous.subject or flatten_header_text(
                render_template(first_subject, prospect, mailbox, sender_name=sender_name)
            )
            subject = base if base.lower().startswith("re:") else f"Re: {base}"
    sent = SentMessage(
        team_id=enrollment.team_id,
        mailbox_id=mailbox.id,
        enrollment_id=enrollment.id,
        step_position=position,
        attempt=attempt or 0,
        prospect_id=prospect.id,
        message_id=new_message_id(mailbox.email),
        thread_id=previous.thread_id if previous else None,
        in_reply_to=in_reply_to,
        references=" ".join(references) or None,
        subject=subject or "(no subject)",
        to_addrs=[prospect.email],
        cc_addrs=[],
        status=SendStatus.SENDING,
        claimed_at=now,
    )
    session.add(sent)
    session.flush()
    return sent


def _sender_name(session: Session, mailbox: Mailbox) -> str | None:
    """The mailbox owner's name, for ``{{sender_name}}``."""
    if mailbox.user_id is None:
        return None
    return session.scalar(select(User.name).where(User.id == mailbox.user_id))


def _hold_for_missing_values(
    session: Session, enrollment_id: int, position: int, blocked: tuple[str, ...], now: datetime
) -> None:
    """Give the claimed step back and pause: a person fills the value in, then resumes."""
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(next_step=position, next_step_at=None)
        .execution_options(synchronize_session=False)
    )
    names = ", ".join(f"{{{{{b}}}}}" if not b.startswith("{{") else b for b in blocked)
    transition(
        session,
        enrollment_id,
        EnrollmentState.PAUSED,
        f"step {position + 1} needs a value for {names}: fill it in on the prospect "
        "(or give the placeholder a fallback, e.g. {{first_name|there}}), then resume",
        from_states={EnrollmentState.ACTIVE},
        now=now,
    )
    log.info(
        "step_held_missing_values enrollment_id=%s step=%s missing=%s",
        enrollment_id,
        position,
        ",".join(blocked),
    )


def _previous_sent(session: Session, enrollment_id: int, position: int) -> SentMessage | None:
    return session.scalar(
        select(SentMessage)
        .where(
            SentMessage.enrollment_id == enrollment_id,
            SentMessage.step_position < position,
            SentMessage.status == SendStatus.SENT,
        )
        .order_by(SentMessage.step_position.desc(), SentMessage.attempt.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class DeliveryOutcome:
    status: str  # sent, cancelled, failed, waiting (mailbox needs a person)
    detail: str = ""


def deliver(sent_message_id: int) -> DeliveryOutcome:
    """Hand a claimed message to its mailbox's provider. Safe to run twice.

    Raises:
        ProviderError: a transient failure; the job is retried.
    """
    with session_scope() as session:
        sent = session.get(SentMessage, sent_message_id)
        if sent is None or sent.status != SendStatus.SENDING:
            return DeliveryOutcome(sent.status if sent else "missing")
        enrollment = session.get(Enrollment, sent.enrollment_id) if sent.enrollment_id else None
        if enrollment is not None and enrollment.state != EnrollmentState.ACTIVE:
            session.execute(
                update(SentMessage)
                .where(SentMessage.id == sent.id, SentMessage.status == SendStatus.SENDING)
                .values(status=SendStatus.CANCELLED, error=f"enrollment {enrollment.state}")
            )
            if enrollment.state == EnrollmentState.PAUSED and sent.step_position is not None:
                # Paused (an out-of-office) between the claim and now: give the step
                # back, so it goes out when the enrolment resumes instead of being
                # skipped. A final state keeps it claimed: nothing more is sent.
                session.execute(
                    update(Enrollment)
                    .where(
                        Enrollment.id == enrollment.id,
                        Enrollment.state == EnrollmentState.PAUSED,
                        Enrollment.next_step == sent.step_position + 1,
                    )
                    .values(next_step=sent.step_position)
                )
            log.info(
                "send_cancelled sent_id=%s enrollment_id=%s state=%s",
                sent.id,
                enrollment.id,
                enrollment.state,
            )
            return DeliveryOutcome("cancelled", f"enrollment is {enrollment.state}")
        mailbox = session.get_one(Mailbox, sent.mailbox_id)
        if mailbox.status == MailboxStatus.NEEDS_RECONNECT:
            return DeliveryOutcome("waiting", "mailbox needs reconnecting")
        prepared = _prepare(session, sent, mailbox)
        if isinstance(prepared, str):
            session.rollback()  # nothing half-made is kept (tracked document links)
            return _record_send_failure(sent_message_id, prepared)
        outgoing = prepared
        first_attempt = sent.send_attempts == 0
        sent.send_attempts += 1
        credentials = decrypt_json(mailbox.credentials_encrypted)
        saver = credential_saver(mailbox.id, mailbox.credentials_encrypted)
        mailbox_kind, mailbox_email = mailbox.kind, mailbox.email

    try:
        with open_provider(
            mailbox_kind, mailbox_email, credentials, save_credentials=saver
        ) as provider:
            result = None if first_attempt else provider.find_sent(outgoing.message_id)
            if result is not None:
                log.info("send_found_already_sent sent_id=%s", sent_message_id)
            else:
                result = provider.send(outgoing)
    except ProviderError as exc:
        if not exc.permanent:
            raise
        return _record_send_failure(sent_message_id, str(exc), needs_reconnect=exc.needs_reconnect)
    except MessageBuildError as exc:  # what the email package refused beyond check_message
        return _record_send_failure(sent_message_id, str(exc))
    _record_sent(sent_message_id, result)
    return DeliveryOutcome("sent")


# What may pass when tried again: the database, Redis, a file or a socket, the job's
# own timeout (RQ's JobTimeoutException is an Exception). Anything else raised while
# making a message is the message's own fault and fails the same way every time.
_RETRYABLE = (SQLAlchemyError, RedisError, OSError, JobTimeoutException)


def _prepare(session: Session, sent: SentMessage, mailbox: Mailbox) -> OutgoingMessage | str:
    """The message to hand over, or why it can never be made (a failed send, not a retry).

    Raises:
        SQLAlchemyError, RedisError, OSError, JobTimeoutException: retrying may help.
    """
    try:
        outgoing = _outgoing(session, sent, mailbox, tracked=True)
        check_message(outgoing)
    except MessageBuildError as exc:
        return str(exc)
    except _RETRYABLE:
        raise
    except Exception as exc:  # rendering or tracking refused this message's content
        log.exception("send_unbuildable sent_id=%s", sent.id)
        return f"the message could not be made ({type(exc).__name__}: {exc})"
    return outgoing


def _outgoing(
    session: Session, sent: SentMessage, mailbox: Mailbox, *, tracked: bool = False
) -> OutgoingMessage:
    """The message as handed over; `tracked` applies the pixel and click links.

    Tracking is applied only to what is actually sent (never to the copy in a
    Salesforce description), only when the team has it on, and only to an HTML
    body. The plain-text part keeps the real links.
    """
    prospect = session.get(Prospect, sent.prospect_id) if sent.prospect_id else None
    body_html = ""
    track_this = True  # a one-off email may be sent untracked
    extra_attachments: list[Attachment] = []
    if sent.enrollment_id is not None and sent.step_position is not None:
        enrollment = session.get_one(Enrollment, sent.enrollment_id)
        step = session.scalar(
            select(SequenceStep).where(
                SequenceStep.sequence_id == enrollment.sequence_id,
                SequenceStep.position == sent.step_position,
            )
        )
        if step is not None:
            body_html = render_template(
                step.body_html,
                prospect,
                mailbox,
                html=True,
                sender_name=_sender_name(session, mailbox),
            )
    else:
        # A one-off email: its body was written, filled in and checked when composed.
        from worker.sequences.oneoff import composed_body

        composed = composed_body(session, sent, with_files=tracked)
        if composed is not None:
            body_html, track_this, extra_attachments = composed
    # Documents on the step: tracked links (made per recipient only when sending) and files.
    documents = documents_for_message(
        session, sent, base_url=get_settings().public_base_url, sending=tracked
    )
    body_html = documents.add_to(body_html)
    sent_html = body_html
    tracking_on = track_this and session.get_one(Team, sent.team_id).tracking_enabled
    if tracked and body_html.strip() and tracking_on:
        sent_html = apply_tracking(
            body_html,
            base_url=get_settings().public_base_url,
            sent_message_id=sent.id,
            team_id=sent.team_id,
            recipient=0,  # a step goes to one prospect: to_addrs[0]
            issued_at=now_seconds(),
        ).html
    return OutgoingMessage(
        from_addr=mailbox.email,
        to=list(sent.to_addrs),
        cc=list(sent.cc_addrs),
        subject=sent.subject,
        html=sent_html,
        text=html_to_text(body_html),
        message_id=sent.message_id,
        in_reply_to=sent.in_reply_to,
        references=(sent.references or "").split(),
        thread_id=sent.thread_id,
        attachments=[*documents.attachments, *extra_attachments],
    )


def _record_sent(sent_message_id: int, result: SendResult) -> None:
    """Mark sent, schedule the next step, record the event and owe Salesforce a Task."""
    now = utcnow()
    with session_scope() as session:
        done = session.execute(
            update(SentMessage)
            .where(SentMessage.id == sent_message_id, SentMessage.status == SendStatus.SENDING)
            .values(
                status=SendStatus.SENT,
                sent_at=now,
                message_id=result.message_id,
                provider_message_id=result.provider_message_id,
                thread_id=result.thread_id,
                error=None,
            )
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return  # another process got there first
        sent = session.get_one(SentMessage, sent_message_id)
        _note_sent_copy(session, sent.mailbox_id, result.sent_copy_error, now)
        enrollment = session.get(Enrollment, sent.enrollment_id) if sent.enrollment_id else None
        prospect = session.get(Prospect, sent.prospect_id) if sent.prospect_id else None
        event_id = record_event(
            session,
            team_id=sent.team_id,
            key=natural_key("sent", sent.id),
            kind="sent",
            occurred_at=now,
            sent_message_id=sent.id,
            enrollment_id=sent.enrollment_id,
            prospect_id=sent.prospect_id,
            data={
                "message_id": sent.message_id,
                "subject": sent.subject,
                "step": sent.step_position,
            },
        )
        if enrollment is not None:
            _schedule_next(session, enrollment, now)
        if event_id is not None and prospect is not None:
            queue_salesforce_task(
                session,
                team_id=sent.team_id,
                key=natural_key("task", "sent", sent.id),
                kind="task_sent",
                who_email=prospect.email,
                event_id=event_id,
                payload={
                    "subject": f"Email: {sent.subject}",
                    "description": _sent_description(session, sent),
                    "activity_date": now.date().isoformat(),
                    "message_id": sent.message_id,
                },
            )
    log.info("sent sent_id=%s message_id=%s", sent_message_id, result.message_id)


def _note_sent_copy(session: Session, mailbox_id: int, error: str | None, now: datetime) -> None:
    """Show on the mailbox why our copy missed Sent; a copy filed later clears it."""
    if error is not None:
        log.warning("sent_copy_not_filed mailbox_id=%s reason=%s", mailbox_id, error)
        values: dict[str, object] = {"sent_copy_error": error, "sent_copy_failed_at": now}
        clause = Mailbox.id == mailbox_id
    else:
        values = {"sent_copy_error": None, "sent_copy_failed_at": None}
        clause = (Mailbox.id == mailbox_id) & Mailbox.sent_copy_error.is_not(None)
    session.execute(update(Mailbox).where(clause).values(**values))


def _sent_description(session: Session, sent: SentMessage) -> str:
    mailbox = session.get_one(Mailbox, sent.mailbox_id)
    body = html_to_text(_outgoing(session, sent, mailbox).html)
    header = f"To: {', '.join(sent.to_addrs)}\nFrom: {mailbox.email}\nSubject: {sent.subject}\n\n"
    return (header + body)[:DESCRIPTION_LIMIT]


def _schedule_next(session: Session, enrollment: Enrollment, now: datetime) -> None:
    sequence = session.get_one(Sequence, enrollment.sequence_id)
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment.id)
        .values(steps_sent=Enrollment.steps_sent + 1)
    )
    following = next((s for s in sequence.steps if s.position == enrollment.next_step), None)
    if following is None:
        transition(
            session,
            enrollment.id,
            EnrollmentState.FINISHED,
            "last step sent",
            from_states={EnrollmentState.ACTIVE},
            now=now,
        )
        return
    # Only an enrolment still active gets a next step; a reply may have landed.
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == enrollment.id,
            Enrollment.state == EnrollmentState.ACTIVE,
            Enrollment.next_step == following.position,
        )
        .values(next_step_at=now + timedelta(seconds=following.delay_seconds))
    )


def _record_send_failure(
    sent_message_id: int, reason: str, *, needs_reconnect: bool = False
) -> DeliveryOutcome:
    """A send that retrying cannot fix: failed with `reason`, and its enrolment paused.

    With `needs_reconnect` the step stays claimed and waits for the mailbox instead.
    """
    now = utcnow()
    with session_scope() as session:
        sent = session.get_one(SentMessage, sent_message_id)
        if needs_reconnect:
            # The step stays claimed; it goes out once the mailbox is reconnected.
            session.execute(
                update(Mailbox)
                .where(Mailbox.id == sent.mailbox_id)
                .values(status=MailboxStatus.NEEDS_RECONNECT, status_reason=reason)
            )
            sent.error = reason
            log.warning("send_waiting_reconnect sent_id=%s mailbox_id=%s", sent.id, sent.mailbox_id)
            return DeliveryOutcome("waiting", reason)
        session.execute(
            update(SentMessage)
            .where(SentMessage.id == sent.id, SentMessage.status == SendStatus.SENDING)
            .values(status=SendStatus.FAILED, error=reason)
        )
        if sent.enrollment_id is not None:
            transition(
                session,
                sent.enrollment_id,
                EnrollmentState.PAUSED,
                f"send failed: {reason}",
                from_states={EnrollmentState.ACTIVE},
                now=now,
            )
        log.error("send_failed sent_id=%s error=%s", sent.id, reason)
        return DeliveryOutcome("failed", reason)


def due_enrollments(session: Session, now: datetime, limit: int) -> list[tuple[int, int]]:
    """(enrollment id, next step) pairs whose step is due, oldest first."""
    rows = session.execute(
        select(Enrollment.id, Enrollment.next_step)
        .where(Enrollment.state == EnrollmentState.ACTIVE, Enrollment.next_step_at <= now)
        .order_by(Enrollment.next_step_at)
        .limit(limit)
    )
    return [(int(r[0]), int(r[1])) for r in rows]


def stuck_sends(session: Session, older_than: datetime, limit: int) -> list[int]:
    """Claimed messages whose hand-over never finished (a worker died, a mailbox failed)."""
    rows = session.scalars(
        select(SentMessage.id)
        .join(Mailbox, Mailbox.id == SentMessage.mailbox_id)
        .where(
            SentMessage.status == SendStatus.SENDING,
            SentMessage.claimed_at < older_than,
            Mailbox.status != MailboxStatus.NEEDS_RECONNECT,
        )
        .order_by(SentMessage.claimed_at)
        .limit(limit)
    )
    return [int(r) for r in rows]


def resume_due(session: Session, now: datetime) -> int:
    """Resume paused enrolments whose resume time has come. Returns how many."""
    ids = session.scalars(
        select(Enrollment.id).where(
            Enrollment.state == EnrollmentState.PAUSED,
            Enrollment.resume_at.is_not(None),
            Enrollment.resume_at <= now,
        )
    ).all()
    resumed = 0
    for enrollment_id in ids:
        if transition(
            session,
            enrollment_id,
            EnrollmentState.ACTIVE,
            "resumed after pause",
            from_states={EnrollmentState.PAUSED},
            now=now,
            resume_at=None,
            next_step_at=now,
        ):
            resumed += 1
    return resumed


def is_final(state: str) -> bool:
    return state in FINAL_STATES
