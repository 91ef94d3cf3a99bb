"""Pacing a mailbox's sends: a daily cap, spacing with jitter, and pauses.

The claim (`worker.sequences.claiming`) asks `hold_for_mailbox` once the step
is its own and the message could be made, in the same transaction. The
mailbox row is the lock: one conditional UPDATE per claim::

    UPDATE mailboxes SET next_send_at = now + spacing * (1 ± jitter), <pause cleared>
     WHERE id = :mailbox
       AND (next_send_at IS NULL OR next_send_at <= now)              -- spacing, cap
       AND (paused_at IS NULL OR paused_until <= now)                 -- quota, guard

    no row  ──▶ the step is given back (next_step = n, next_step_at = when it may
                go, wait_reason = why): "waiting: mailbox daily cap 400 reached,
                next send after 00:00 UTC"
    the row ──▶ today's sends are counted (the row lock serialises this per
                mailbox); at the cap, next_send_at = next midnight UTC and the
                step is given back; else the claim goes on

Two claims of one mailbox meet on that row (PostgreSQL row lock, SQLite's
write lock), so the second sees the first's next_send_at and its message:
nothing is sent over the cap or inside the spacing, and a step given back is
the same step later (its claim is undone in the same transaction: nothing
lost, nothing doubled). The day is the UTC day; the count is of messages
claimed that day (sending or sent), steps and emails written by hand alike,
because the provider counts them all. A hand-written email never waits here:
a person chose to send it.

A paused sequence (`SequencePause`, the bounce guard's) gives its steps back
the same way. A pause without an end is re-checked every `RECHECK`; resuming
(`resume_mailbox`, `resume_sequence`) makes the waiting steps due at once.
A provider's quota error met while handing over (`hold_after_quota`) pauses
the mailbox until the quota resets and gives the step back instead of failing
it (worker.sync.quota). Never commits; never talks to a mailbox.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from config import get_settings
from core.models import (
    Enrollment,
    EnrollmentState,
    Mailbox,
    SendStatus,
    SentMessage,
    Sequence,
    SequencePause,
)
from worker.sync.quota import QuotaError, next_utc_midnight

log = logging.getLogger(__name__)

# A pause without an end (the bounce guard's) is looked at again this often.
RECHECK = timedelta(minutes=15)
# What every reason this module writes starts with: resuming finds them by it.
MAILBOX_PAUSED = "waiting: mailbox paused"
SEQUENCE_PAUSED = "waiting: sequence paused"
SPACING = "waiting: mailbox sends"

_jitter = random.Random()  # noqa: S311 (spacing jitter, not a secret)


def is_paused(mailbox: Mailbox, now: datetime) -> bool:
    return mailbox.paused_at is not None and (
        mailbox.paused_until is None or mailbox.paused_until > now
    )


def daily_cap(mailbox: Mailbox) -> int:
    return mailbox.daily_cap or get_settings().sending.daily_cap(mailbox.kind)


def spacing_seconds(mailbox: Mailbox) -> int:
    own = mailbox.send_spacing_seconds
    return get_settings().sending.spacing_seconds if own is None else own


def jittered(seconds: int) -> timedelta:
    """`seconds` ± SIGHTLINE_SEND_JITTER_PERCENT, so sends never tick like a machine's."""
    spread = get_settings().sending.jitter_percent / 100
    return timedelta(seconds=seconds * (1 + _jitter.uniform(-spread, spread)))


def sends_today(session: Session, mailbox_id: int, now: datetime) -> int:
    """Messages claimed from this mailbox since midnight UTC that went or may go out."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return int(
        session.scalar(
            select(func.count())
            .select_from(SentMessage)
            .where(
                SentMessage.mailbox_id == mailbox_id,
                SentMessage.claimed_at >= midnight,
                SentMessage.status.in_((SendStatus.SENDING, SendStatus.SENT)),
            )
        )
        or 0
    )


def hold_for_mailbox(
    session: Session, enrollment_id: int, sequence: Sequence, position: int, now: datetime
) -> bool:
    """True if the just-claimed step was given back to wait; False to send it now.

    Must run in the claim's transaction, after its conditional UPDATE.
    """
    pause = session.get(SequencePause, sequence.id)
    if pause is not None:
        reason = f"{SEQUENCE_PAUSED}: {pause.reason} (resume the sequence to send again)"
        _give_back(session, enrollment_id, position, now + RECHECK, reason)
        return True
    mailbox_id = sequence.mailbox_id
    passed = session.execute(
        update(Mailbox)
        .where(
            Mailbox.id == mailbox_id,
            or_(Mailbox.next_send_at.is_(None), Mailbox.next_send_at <= now),
            or_(
                Mailbox.paused_at.is_(None),
                and_(Mailbox.paused_until.is_not(None), Mailbox.paused_until <= now),
            ),
        )
        .values(next_send_at=now, paused_at=None, paused_until=None, pause_reason=None)
        .execution_options(synchronize_session=False)
    )
    mailbox = session.get_one(Mailbox, mailbox_id)
    session.refresh(mailbox)
    if passed.rowcount != 1:  # type: ignore[attr-defined]
        until, reason = _why_not_now(session, mailbox, now)
        _give_back(session, enrollment_id, position, until, reason)
        return True
    cap = daily_cap(mailbox)
    if sends_today(session, mailbox_id, now) >= cap:
        midnight = next_utc_midnight(now)
        mailbox.next_send_at = midnight
        reason = f"waiting: mailbox daily cap {cap} reached, next send after 00:00 UTC"
        _give_back(session, enrollment_id, position, midnight + jittered(60), reason)
        log.info("mailbox_daily_cap_reached mailbox_id=%s cap=%s", mailbox_id, cap)
        return True
    mailbox.next_send_at = now + jittered(spacing_seconds(mailbox))
    return False


def _why_not_now(session: Session, mailbox: Mailbox, now: datetime) -> tuple[datetime, str]:
    """When the step may go and the words the enrolment shows meanwhile."""
    if is_paused(mailbox, now):
        if mailbox.paused_until is None:
            return now + RECHECK, (
                f"{MAILBOX_PAUSED}: {mailbox.pause_reason} (resume it on the Mailboxes page)"
            )
        return mailbox.paused_until, (
            f"{MAILBOX_PAUSED} until {mailbox.paused_until:%Y-%m-%d %H:%M} UTC: "
            f"{mailbox.pause_reason}"
        )
    until = mailbox.next_send_at or now
    if until == next_utc_midnight(now):
        return until + jittered(60), (
            f"waiting: mailbox daily cap {daily_cap(mailbox)} reached, next send after 00:00 UTC"
        )
    spacing = spacing_seconds(mailbox)
    # Each step waiting for this mailbox's spacing takes the next free slot, one spacing
    # after those queued before it: so a burst of n due steps costs about n claims,
    # not n^2 (all coming due together and all but one given back again, each gap).
    queued = _queued_for_spacing(session, mailbox.id, now)
    slot = until + timedelta(seconds=spacing * queued + _jitter.uniform(0, max(spacing, 1)))
    return slot, (f"{SPACING} one message every ~{spacing} s, next send after {until:%H:%M:%S} UTC")


def _queued_for_spacing(session: Session, mailbox_id: int, now: datetime) -> int:
    """Steps of this mailbox already given back for its spacing and still to come."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(Enrollment)
            .join(Sequence, Sequence.id == Enrollment.sequence_id)
            .where(
                Sequence.mailbox_id == mailbox_id,
                Enrollment.state == EnrollmentState.ACTIVE,
                Enrollment.next_step_at > now,
                Enrollment.wait_reason.startswith(SPACING, autoescape=True),
            )
        )
        or 0
    )


def _give_back(
    session: Session, enrollment_id: int, position: int, until: datetime, reason: str
) -> None:
    """Undo the claim of step `position` (same transaction): it comes due again at `until`."""
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == enrollment_id,
            Enrollment.state == EnrollmentState.ACTIVE,
            Enrollment.next_step == position + 1,
        )
        .values(next_step=position, next_step_at=until, wait_reason=reason)
        .execution_options(synchronize_session=False)
    )
    log.info(
        "step_waits_for_mailbox enrollment_id=%s step=%s until=%s reason=%r",
        enrollment_id,
        position,
        until.isoformat(),
        reason,
    )


def pause_mailbox(
    session: Session, mailbox_id: int, reason: str, now: datetime, until: datetime | None
) -> bool:
    """Pause the mailbox's sends (until `until`, or until a person resumes it).

    True if this call paused it; False if it was paused already (an earlier pause
    is kept unless this one lasts longer).
    """
    longer = or_(
        Mailbox.paused_at.is_(None),
        and_(Mailbox.paused_until.is_not(None), Mailbox.paused_until <= now),
    )
    if until is None:
        longer = or_(longer, Mailbox.paused_until.is_not(None))
    else:
        longer = or_(longer, and_(Mailbox.paused_until.is_not(None), Mailbox.paused_until < until))
    paused = session.execute(
        update(Mailbox)
        .where(Mailbox.id == mailbox_id, longer)
        .values(paused_at=now, paused_until=until, pause_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if paused.rowcount != 1:  # type: ignore[attr-defined]
        return False
    log.warning(
        "mailbox_paused mailbox_id=%s until=%s reason=%r",
        mailbox_id,
        until.isoformat() if until else "resumed by a person",
        reason,
    )
    return True


def hold_after_quota(session: Session, sent: SentMessage, error: QuotaError, now: datetime) -> str:
    """The provider refused for quota: pause the mailbox; a step is given back, not failed.

    A hand-written email stays claimed (`sending`) and goes out when the stuck-send
    recovery finds the mailbox unpaused. Returns the reason shown.
    """
    until = error.resets_at(now, get_settings().sending.quota_backoff_seconds)
    reason = f"the provider's sending quota: {error}"
    pause_mailbox(session, sent.mailbox_id, reason, now, until)
    return hold_sent(session, sent, until, reason)


def pause_for_reported_quota(
    session: Session, mailbox_id: int, diagnostic: str, now: datetime
) -> datetime:
    """A bounce report said our mailbox was over its daily quota: pause it until midnight UTC."""
    until = next_utc_midnight(now)
    reason = f"the provider reported its sending quota exceeded: {diagnostic[:300]}"
    pause_mailbox(session, mailbox_id, reason, now, until)
    return until


def hold_while_paused(session: Session, sent: SentMessage, mailbox: Mailbox, now: datetime) -> str:
    """A message claimed before its mailbox was paused waits like a new claim would."""
    until = mailbox.paused_until or now + RECHECK
    # An earlier hand-over may have got through: only the recovery's look in Sent
    # may tell, so that message stays claimed rather than being made anew.
    return hold_sent(
        session, sent, until, mailbox.pause_reason or "paused", keep=sent.send_attempts > 0
    )


def hold_sent(
    session: Session, sent: SentMessage, until: datetime, reason: str, *, keep: bool = False
) -> str:
    """Give a claimed step back until `until` (cancelling its message); a one-off stays claimed."""
    shown = f"{MAILBOX_PAUSED} until {until:%Y-%m-%d %H:%M} UTC: {reason}"
    if not keep and sent.enrollment_id is not None and sent.step_position is not None:
        session.execute(
            update(SentMessage)
            .where(SentMessage.id == sent.id, SentMessage.status == SendStatus.SENDING)
            .values(status=SendStatus.CANCELLED, error=shown)
        )
        _give_back(session, sent.enrollment_id, sent.step_position, until, shown)
    else:
        sent.error = shown
    return shown


def release_waiting(
    session: Session, prefix: str, now: datetime, *, sequence_ids: list[int]
) -> int:
    """Make the steps that wait for a lifted pause due now. Returns how many."""
    if not sequence_ids:
        return 0
    released = session.execute(
        update(Enrollment)
        .where(
            Enrollment.sequence_id.in_(sequence_ids),
            Enrollment.state == EnrollmentState.ACTIVE,
            Enrollment.next_step_at > now,
            Enrollment.wait_reason.startswith(prefix, autoescape=True),
        )
        .values(next_step_at=now, wait_reason=None)
        .execution_options(synchronize_session=False)
    )
    return int(released.rowcount)  # type: ignore[attr-defined]


def resume_mailbox(session: Session, mailbox_id: int, now: datetime) -> int:
    """A person lifts a mailbox's pause; its waiting steps are due at once."""
    session.execute(
        update(Mailbox)
        .where(Mailbox.id == mailbox_id)
        .values(paused_at=None, paused_until=None, pause_reason=None, next_send_at=None)
        .execution_options(synchronize_session=False)
    )
    sequence_ids = list(
        session.scalars(select(Sequence.id).where(Sequence.mailbox_id == mailbox_id))
    )
    released = release_waiting(session, MAILBOX_PAUSED, now, sequence_ids=sequence_ids)
    log.info("mailbox_resumed mailbox_id=%s steps_released=%s", mailbox_id, released)
    return released


def resume_sequence(session: Session, sequence_id: int, now: datetime) -> int:
    """A person lifts a sequence's pause; its waiting steps are due at once."""
    pause = session.get(SequencePause, sequence_id)
    if pause is not None:
        session.delete(pause)
        session.flush()
    released = release_waiting(session, SEQUENCE_PAUSED, now, sequence_ids=[sequence_id])
    log.info("sequence_resumed sequence_id=%s steps_released=%s", sequence_id, released)
    return released
