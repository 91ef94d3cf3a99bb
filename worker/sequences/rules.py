"""What an inbound signal does to sequences: every rule in one place.

What this module owns: turning a classified message that answers one of ours
(``worker.matching``) into enrolment state changes, prospect flags and the
Salesforce Tasks they are owed. It never reads mail, never decides what a
message *is* (that is ``worker.matching.classify``) and never sends anything:
a retried step goes out through the normal claim in ``worker.sequences.claiming``.

    signal (event kind)      enrolments                          prospect          Salesforce
    reply                    this one → replied                  -                 Task (reply)
    reply "remove me"        every live one → opted_out          opted_out_at      Task (reply)
    reply, stop_at_company   + the company's other live ones → finished (worker.sequences.company)
    complaint                every live one → opted_out          opted_out_at      Task
    bounce (hard)            every live one → bounced            undeliverable_at  Task
      too many, recently     the mailbox / sequence paused (worker.sequences.bounce_guard)
    bounce: sender's quota   the step re-sent after the mailbox's pause (worker.sync.quota);
                             the address is not blamed
    soft_bounce              the step is re-sent after a back-off
      n-th within window     every live one → bounced            -                 Task
    delayed                  nothing: the server is still trying
    auto_reply               this one → paused until the return date (or the
                             default pause), then resumed by cron; never ended
    auto_reply (receipt)     nothing: "we received your message" is no absence
    teammate_reply, other    nothing: recorded (worker.sequences.signals)

"Every live one" is every active or paused enrolment of that prospect in the
team, whatever the sequence: a complaint or a dead address is about the
person, not about one sequence. A hard bounce marks the address undeliverable,
so enrolling it again is refused; too many soft bounces stop the enrolments
but leave the address usable later (a full mailbox empties).

Soft bounces: the n-th soft bounce of an address within
``SIGHTLINE_SOFT_BOUNCE_WINDOW_DAYS`` re-schedules the bounced step after
``SIGHTLINE_SOFT_BOUNCE_RETRY_SECONDS * 2^(n-1)`` as a new attempt (its own
Message-ID; a paused enrolment sends it when it resumes), unless a later step
already went out; the ``SIGHTLINE_SOFT_BOUNCE_LIMIT``-th ends the enrolments as
bounced. Delay notices never count.

The caller (``worker.sync.inbound``) records the event under its natural key
first and calls ``apply_signal`` only for a new event, in the same
transaction: a signal seen twice changes nothing twice.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from config import Settings, get_settings
from core.events import natural_key, queue_salesforce_task
from core.models import (
    Enrollment,
    EnrollmentState,
    EnrollmentTransition,
    Event,
    OptOutSource,
    Prospect,
    SentMessage,
)
from worker.salesforce.task_limits import DESCRIPTION_LIMIT
from worker.sequences.bounce_guard import guard_after_hard_bounce
from worker.sequences.company import stop_colleagues
from worker.sequences.enrolling import transition
from worker.sequences.optouts import mark_opted_out, stop_live
from worker.sequences.pacing import pause_for_reported_quota
from worker.sequences.send_windows import timing
from worker.sequences.signals import Signal, resume_time
from worker.sync.quota import reports_sender_quota

log = logging.getLogger(__name__)

LIVE = frozenset({EnrollmentState.ACTIVE, EnrollmentState.PAUSED})


def apply_signal(
    session: Session,
    signal: Signal,
    sent: SentMessage,
    event_id: int,
    *,
    who: str,
    now: datetime,
    settings: Settings | None = None,
) -> None:
    """Apply the rule for a newly recorded signal. The caller owns the transaction."""
    settings = settings or get_settings()
    kind = signal.kind
    if kind == "reply" and signal.data.get("unsubscribe"):
        _opt_out(session, sent, event_id, f"asked to be removed ({who})", now, OptOutSource.REPLY)
    elif kind == "reply":
        if sent.enrollment_id is not None:
            transition(
                session,
                sent.enrollment_id,
                EnrollmentState.REPLIED,
                f"reply from {who}",
                from_states=LIVE,
                event_id=event_id,
                now=now,
                next_step_at=None,
            )
    elif kind == "complaint":
        feedback = signal.data.get("feedback_type") or "abuse"
        reason = f"spam complaint ({feedback}) via {who}"
        _opt_out(session, sent, event_id, reason, now, OptOutSource.COMPLAINT)
        _owe_task(session, sent, event_id, "task_complaint", "Spam complaint", reason, now)
    elif kind in ("bounce", "soft_bounce") and reports_sender_quota(_diagnostic(signal)):
        _over_quota(session, signal, sent, event_id, now)
    elif kind == "bounce":
        reason = f"hard bounce {_describe(signal)}"
        _mark_undeliverable(session, sent, now)
        _stop_all(session, sent, EnrollmentState.BOUNCED, reason, event_id, now)
        _owe_task(session, sent, event_id, "task_bounce", "Email bounced", reason, now)
        guard_after_hard_bounce(session, sent, now, settings)
    elif kind == "soft_bounce":
        _soft_bounce(session, signal, sent, event_id, now, settings)
    elif kind == "auto_reply" and not signal.data.get("acknowledgement"):
        _pause(session, signal, sent, event_id, who, now, settings)
    # "delayed", "other", "teammate_reply", an acknowledgement: recorded as an
    # event only (the server is still trying; nobody from the prospect's side spoke).
    if kind == "reply":
        stop_colleagues(session, sent, event_id, now)  # if the sequence asks for it


def _diagnostic(signal: Signal) -> str:
    return str(signal.data.get("diagnostic") or "")


def _over_quota(
    session: Session, signal: Signal, sent: SentMessage, event_id: int, now: datetime
) -> None:
    """Our mailbox was over its sending quota: no fault of the address, and the step goes again."""
    until = pause_for_reported_quota(session, sent.mailbox_id, _diagnostic(signal), now)
    if sent.enrollment_id is not None and sent.step_position is not None:
        why = "was not delivered: the mailbox was over its sending quota"
        _retry_step(session, sent, event_id, why, until, now)


def _describe(signal: Signal) -> str:
    parts = [signal.data.get("status") or "", signal.data.get("reason") or ""]
    recipient = signal.data.get("recipient")
    text = " ".join(p for p in parts if p)
    return f"{text} ({recipient})" if recipient else text


def _live_enrollments(session: Session, prospect_id: int) -> list[int]:
    return [
        int(i)
        for i in session.scalars(
            select(Enrollment.id).where(
                Enrollment.prospect_id == prospect_id, Enrollment.state.in_(list(LIVE))
            )
        )
    ]


def _stop_all(
    session: Session,
    sent: SentMessage,
    to_state: EnrollmentState,
    reason: str,
    event_id: int,
    now: datetime,
) -> None:
    """Every live enrolment of the prospect (team-wide) to ``to_state``."""
    if sent.prospect_id is None:
        if sent.enrollment_id is not None:
            transition(
                session,
                sent.enrollment_id,
                to_state,
                reason,
                from_states=LIVE,
                event_id=event_id,
                now=now,
                next_step_at=None,
            )
        return
    # With the enrolment sent to: finished but re-opened for a retry, say.
    stop_live(
        session,
        sent.prospect_id,
        to_state,
        reason,
        event_id=event_id,
        now=now,
        also=sent.enrollment_id,
    )


def _opt_out(
    session: Session,
    sent: SentMessage,
    event_id: int,
    reason: str,
    now: datetime,
    source: OptOutSource,
) -> None:
    """The address on the team's opt-out list (with the reason) and its live enrolments ended."""
    if sent.prospect_id is not None:
        mark_opted_out(
            session,
            team_id=sent.team_id,
            prospect_id=sent.prospect_id,
            reason=reason,
            source=source,
            now=now,
        )
    _stop_all(session, sent, EnrollmentState.OPTED_OUT, reason, event_id, now)


def _mark_undeliverable(session: Session, sent: SentMessage, now: datetime) -> None:
    if sent.prospect_id is not None:
        session.execute(
            update(Prospect)
            .where(Prospect.id == sent.prospect_id, Prospect.undeliverable_at.is_(None))
            .values(undeliverable_at=now)
        )


def _soft_bounce(
    session: Session,
    signal: Signal,
    sent: SentMessage,
    event_id: int,
    now: datetime,
    settings: Settings,
) -> None:
    if sent.prospect_id is None:
        return
    window = timedelta(days=settings.soft_bounce_window_days)
    # The event just recorded is counted: this is the n-th soft bounce.
    count = int(
        session.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.prospect_id == sent.prospect_id,
                Event.kind == "soft_bounce",
                Event.created_at >= now - window,
            )
        )
        or 0
    )
    described = _describe(signal)
    if count >= settings.soft_bounce_limit:
        reason = (
            f"{count} soft bounces in {settings.soft_bounce_window_days} days; last {described}"
        )
        _stop_all(session, sent, EnrollmentState.BOUNCED, reason, event_id, now)
        _owe_task(session, sent, event_id, "task_bounce", "Email bounced", reason, now)
        return
    if sent.enrollment_id is None or sent.step_position is None:
        return
    retry_at = now + timedelta(seconds=settings.soft_bounce_retry_seconds * 2 ** (count - 1))
    _retry_step(session, sent, event_id, f"soft bounce {count} {described}", retry_at, now)


def _retry_step(
    session: Session,
    sent: SentMessage,
    event_id: int,
    why: str,
    retry_at: datetime,
    now: datetime,
) -> None:
    """Schedule the bounced step again, if nothing after it has been claimed."""
    assert sent.enrollment_id is not None and sent.step_position is not None
    position = sent.step_position
    enrollment = session.get_one(Enrollment, sent.enrollment_id)
    step = position + 1
    reason = f"step {step} {why}; re-sending at {retry_at:%Y-%m-%d %H:%M} UTC"
    if enrollment.state == EnrollmentState.FINISHED and enrollment.next_step == position + 1:
        # The last step soft-bounced: the sequence is not finished until it lands.
        if transition(
            session,
            enrollment.id,
            EnrollmentState.ACTIVE,
            reason,
            from_states={EnrollmentState.FINISHED},
            event_id=event_id,
            now=now,
            next_step=position,
            next_step_at=retry_at,
            steps_sent=max(enrollment.steps_sent - 1, 0),
        ):
            log.info("soft_bounce_retry enrollment_id=%s step=%s", enrollment.id, step)
        return
    if enrollment.state in LIVE and _rewind(session, enrollment, position, retry_at):
        if enrollment.state == EnrollmentState.PAUSED:
            # The resume sets the time: the history must not promise one.
            reason = f"step {step} {why}; re-sending when it resumes"
        _note(session, enrollment, reason, event_id, now)
        log.info(
            "soft_bounce_retry enrollment_id=%s step=%s retry_at=%s", enrollment.id, step, retry_at
        )
    elif enrollment.state in LIVE | {EnrollmentState.FINISHED}:
        _note_not_retried(session, enrollment, step, why, event_id, now)
    # Replied, bounced, opted out: the sequence ended for its own reason.


def _rewind(session: Session, enrollment: Enrollment, position: int, retry_at: datetime) -> bool:
    """Set a live enrolment back to the bounced step; False if a later step was claimed."""
    rewind = (
        update(Enrollment)
        .where(
            Enrollment.id == enrollment.id,
            Enrollment.state == enrollment.state,
            Enrollment.next_step == position + 1,
        )
        # The bounced step was not delivered: it is sent (and counted) again.
        .values(
            next_step=position,
            steps_sent=case((Enrollment.steps_sent > 0, Enrollment.steps_sent - 1), else_=0),
        )
        .execution_options(synchronize_session=False)
    )
    if enrollment.state == EnrollmentState.ACTIVE:
        rewind = rewind.values(next_step_at=retry_at)
    # A paused one keeps its time: the resume sets it.
    return bool(session.execute(rewind).rowcount == 1)  # type: ignore[attr-defined]


def _note_not_retried(
    session: Session, enrollment: Enrollment, step: int, why: str, event_id: int, now: datetime
) -> None:
    """Say in the history why a soft-bounced step is not sent again.

    The event's own line reads as a retry to come: without this the rep would
    wait for a re-send that never happens.
    """
    if enrollment.next_step > step:
        because = f"step {enrollment.next_step} already went out"
    elif enrollment.next_step == step - 1:  # an earlier report about it re-armed it
        because = "it is already due to go out again"
    else:
        return  # moved under us: whoever moved it wrote the history
    _note(session, enrollment, f"step {step} {why}; not re-sent: {because}", event_id, now)
    log.info(
        "soft_bounce_no_retry enrollment_id=%s step=%s next_step=%s",
        enrollment.id,
        step,
        enrollment.next_step,
    )


def _note(
    session: Session, enrollment: Enrollment, reason: str, event_id: int, now: datetime
) -> None:
    """A history entry that changes no state ("Still active"), naming the event behind it."""
    state = str(enrollment.state)
    session.add(
        EnrollmentTransition(
            enrollment_id=enrollment.id,
            from_state=state,
            to_state=state,
            reason=reason[:2000],
            event_id=event_id,
            at=now,
        )
    )


def _pause(
    session: Session,
    signal: Signal,
    sent: SentMessage,
    event_id: int,
    who: str,
    now: datetime,
    settings: Settings,
) -> None:
    if sent.enrollment_id is None:
        return
    until_text = signal.data.get("until")
    until = date.fromisoformat(until_text) if until_text else None
    enrollment = session.get_one(Enrollment, sent.enrollment_id)
    zone, window = timing(enrollment.sequence, enrollment.prospect)
    resume = resume_time(until, now, settings, zone=zone, window=window)
    stated = f"back {until_text}" if until_text else "no return date"
    if transition(
        session,
        sent.enrollment_id,
        EnrollmentState.PAUSED,
        f"auto-reply from {who} ({stated}); resumes "
        f"{resume.astimezone(zone):%Y-%m-%d %H:%M} {zone.key}",
        from_states={EnrollmentState.ACTIVE},
        event_id=event_id,
        now=now,
        resume_at=resume,
    ):
        return
    # Already paused by an earlier auto-reply: a later return date extends it.
    session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == sent.enrollment_id,
            Enrollment.state == EnrollmentState.PAUSED,
            Enrollment.resume_at.is_not(None),
            Enrollment.resume_at < resume,
        )
        .values(resume_at=resume)
        .execution_options(synchronize_session=False)
    )


def _owe_task(
    session: Session,
    sent: SentMessage,
    event_id: int,
    kind: str,
    title: str,
    reason: str,
    now: datetime,
) -> None:
    """One Salesforce Task for a bounce or a complaint, keyed by its event."""
    prospect = session.get(Prospect, sent.prospect_id) if sent.prospect_id else None
    if prospect is None:
        return
    description = (
        f"{title}: {reason}\nEmail: {sent.subject}\nTo: {prospect.email}\n"
        f"Message-ID: {sent.message_id}"
    )
    queue_salesforce_task(
        session,
        team_id=sent.team_id,
        key=natural_key("task", kind, event_id),
        kind=kind,
        who_email=prospect.email,
        event_id=event_id,
        payload={
            "subject": f"{title}: {sent.subject}"[:255],
            "description": description[:DESCRIPTION_LIMIT],
            "activity_date": now.date().isoformat(),
            "message_id": sent.message_id,
        },
    )
