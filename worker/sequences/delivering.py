"""Handing a claimed message to its mailbox, and recording what happened.

`deliver` re-reads the enrolment just before the hand-over: a reply (or a
person's pause) that committed after the claim cancels the message instead of
sending it (the rule is drawn in `claiming`). Its Message-ID was fixed at claim
time, so when a previous attempt may have got through, `deliver` first asks
the provider whether the message is already in Sent, and a retried hand-over
re-sends the *same* message (mail systems de-duplicate by Message-ID).

    sending ──hand-over──▶ sent: `sent` event, next step scheduled, Task owed
       │ ├──enrolment no longer active──────▶ cancelled (a paused step is given back)
       │ ├──mailbox needs reconnecting──────▶ stays sending, waits for the mailbox
       │ ├──message cannot be made, refused─▶ failed, enrolment paused with the reason
       │ ├──provider quota, mailbox paused──▶ cancelled, the step given back until the
       │ │                                    quota resets (worker.sequences.pacing)
       └─┴──transient (database, network)───▶ raised: the job is retried

One-off emails take the same path after their own claim (`oneoff`), so a step
and an email written by hand are tracked and logged alike. This module never
claims a step: `claiming` and `oneoff` do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from redis.exceptions import RedisError
from rq.timeouts import JobTimeoutException
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.crypto import decrypt_json
from core.db import session_scope
from core.events import natural_key, queue_salesforce_task, record_event
from core.models import (
    Enrollment,
    EnrollmentState,
    Mailbox,
    MailboxStatus,
    Prospect,
    SendStatus,
    SentMessage,
    Sequence,
    utcnow,
)
from worker.sequences.enrolling import transition
from worker.sequences.messages import outgoing_message, sent_description
from worker.sequences.pacing import hold_after_quota, hold_while_paused, is_paused
from worker.sync.base import OutgoingMessage, ProviderError, SendResult
from worker.sync.credentials import credential_saver
from worker.sync.mime import MessageBuildError, check_message
from worker.sync.quota import QuotaError
from worker.sync.registry import open_provider

log = logging.getLogger(__name__)


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
        if is_paused(mailbox, utcnow()):  # claimed before a quota error or the bounce guard
            return DeliveryOutcome("waiting", hold_while_paused(session, sent, mailbox, utcnow()))
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
    except QuotaError as exc:  # not the message's fault: the mailbox waits, the step too
        with session_scope() as session:
            sent = session.get_one(SentMessage, sent_message_id)
            return DeliveryOutcome("waiting", hold_after_quota(session, sent, exc, utcnow()))
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
        outgoing = outgoing_message(session, sent, mailbox, tracked=True)
        check_message(outgoing)
    except MessageBuildError as exc:
        return str(exc)
    except _RETRYABLE:
        raise
    except Exception as exc:  # rendering or tracking refused this message's content
        log.exception("send_unbuildable sent_id=%s", sent.id)
        return f"the message could not be made ({type(exc).__name__}: {exc})"
    return outgoing


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
                    "description": sent_description(session, sent),
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
