"""Claiming a due step: the conditional UPDATE that makes it ours, and the message it becomes.

The rule this module exists to keep, with `delivering`: **a step is never sent
after a reply was recorded.** Two conditional UPDATEs on the enrolment row meet:

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

Before the claim, the send window (`send_windows.hold_for_window`): a step due
outside it is moved to the window's next opening in the prospect's zone, with
the reason, and not claimed.

A claimed step is a `SentMessage` in status ``sending``; its Message-ID is fixed at
claim time, so a retried hand-over re-sends the *same* message (mail systems
de-duplicate by Message-ID). A step whose placeholders lack a value is not
claimed: the enrolment waits, paused, with the reason. This module never talks
to a mailbox and never commits: the caller does.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.header_text import flatten_header_text
from core.models import (
    Enrollment,
    EnrollmentState,
    Mailbox,
    MailboxStatus,
    Prospect,
    SendStatus,
    SentMessage,
    Sequence,
)
from core.templates import SENDER_PLACEHOLDERS, render_all
from worker.sequences.enrolling import transition
from worker.sequences.messages import Sender, mailbox_sender
from worker.sequences.missing_values import missing_values_reason
from worker.sequences.pacing import hold_for_mailbox
from worker.sequences.render import placeholder_values, render_template
from worker.sequences.send_windows import hold_for_window
from worker.sync.mime import new_message_id

log = logging.getLogger(__name__)


def claim_due_step(session: Session, enrollment_id: int, now: datetime) -> SentMessage | None:
    """Claim the enrolment's next step if it is due. None if nothing to claim.

    Must run in its own transaction; the caller commits.
    """
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        return None
    position = enrollment.next_step
    # Outside the send window the step is moved to the next opening, not claimed.
    if hold_for_window(session, enrollment, now):
        return None
    # The conditional UPDATE comes before any other write: it is the lock.
    claimed = session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == enrollment_id,
            Enrollment.state == EnrollmentState.ACTIVE,
            Enrollment.next_step == position,
            Enrollment.next_step_at <= now,
        )
        .values(next_step=position + 1, next_step_at=None, wait_reason=None)
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
    sender = mailbox_sender(session, mailbox)
    sender_name = sender.name
    # A value the step needs and the prospect (or the sender) lacks is never sent as a
    # gap or as raw braces: the enrolment waits, paused, with the reason (core.templates).
    values = placeholder_values(prospect, mailbox, sender_name, sender.signature)
    _, blocked = render_all([(step.subject, False), (step.body_html, True)], values)
    if blocked:
        _hold_for_missing_values(session, enrollment.id, position, blocked, sender, now)
        return None
    # Over the mailbox's daily cap, inside its spacing or paused: the step waits.
    if hold_for_mailbox(session, enrollment.id, sequence, position, now):
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
        render_template(
            step.subject,
            prospect,
            mailbox,
            sender_name=sender_name,
            sender_signature=sender.signature,
        )
    ).strip()
    references: list[str] = []
    in_reply_to = None
    if previous is not None:
        in_reply_to = previous.message_id
        references = [*(previous.references or "").split(), previous.message_id]
        if not subject:
            base = previous.subject or flatten_header_text(
                render_template(
                    first_subject,
                    prospect,
                    mailbox,
                    sender_name=sender_name,
                    sender_signature=sender.signature,
                )
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


def _hold_for_missing_values(
    session: Session,
    enrollment_id: int,
    position: int,
    blocked: tuple[str, ...],
    sender: Sender,
    now: datetime,
) -> None:
    """Give the claimed step back and pause, asking whoever lacks the value for it.

    A value only the sender has (their name, their signature) is asked of the
    sender, on their Account page; when that was all that was missing the
    enrolment is marked `waits_for_sender` and resumes once they fill it in
    (`resume_for_sender`). Anything the prospect lacks needs a person to fill it
    in on the prospect and resume by hand.
    """
    for_sender = [b for b in blocked if b in SENDER_PLACEHOLDERS]
    for_prospect = [b for b in blocked if b not in SENDER_PLACEHOLDERS]
    session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id)
        .values(next_step=position, next_step_at=None)
        .execution_options(synchronize_session=False)
    )
    transition(
        session,
        enrollment_id,
        EnrollmentState.PAUSED,
        missing_values_reason(position, for_sender, for_prospect),
        from_states={EnrollmentState.ACTIVE},
        now=now,
        waits_for_sender=not for_prospect,
    )
    log.info(
        "step_held_missing_values enrollment_id=%s step=%s missing=%s sender_user_id=%s",
        enrollment_id,
        position,
        ",".join(blocked),
        sender.user_id,
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
