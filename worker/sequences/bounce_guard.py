"""The bounce guard: a mailbox or sequence that hard-bounces too often stops sending.

After each newly recorded hard bounce (`worker.sequences.rules`), in the same
transaction: over the last SIGHTLINE_BOUNCE_GUARD_SENDS (50) messages sent from
the bounced message's mailbox, and from its sequence, the share that
hard-bounced. From SIGHTLINE_BOUNCE_GUARD_MIN_SENDS (20) sends on, a share
above SIGHTLINE_BOUNCE_GUARD_PERCENT (8 %) pauses that mailbox (`Mailbox.paused_at`,
no end) or sequence (a `SequencePause` row) with the reason, until a person
resumes it (`worker.sequences.pacing.resume_mailbox` / `resume_sequence`).
Mailbox providers judge senders by their bounce rate: a list gone stale, or
a bad import, is stopped before the mailbox is blocked.

The team is told once per pause: a `sending_paused` event (a Live Feed item every
user of the team sees, with the words), a warning log line, and the
mailboxes page shows the paused mailbox or sequence with its reason and a
Resume button. There are no admin roles yet: everyone in the team is told.

Cost: two indexed queries of at most 50 rows per hard bounce; nothing per send.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from config import Settings
from core.events import natural_key, record_event
from core.models import Enrollment, Event, Mailbox, SendStatus, SentMessage, Sequence, SequencePause
from worker.sequences.pacing import pause_mailbox

log = logging.getLogger(__name__)


def recent_hard_bounces(session: Session, sends: int, **where: int) -> tuple[int, int]:
    """(hard bounces, sends) over the last `sends` sent messages of a mailbox or sequence."""
    query = select(SentMessage.id).where(SentMessage.status == SendStatus.SENT)
    if "mailbox_id" in where:
        query = query.where(SentMessage.mailbox_id == where["mailbox_id"])
    else:
        query = query.join(Enrollment, Enrollment.id == SentMessage.enrollment_id).where(
            Enrollment.sequence_id == where["sequence_id"]
        )
    recent = query.order_by(SentMessage.sent_at.desc(), SentMessage.id.desc()).limit(sends)
    ids = list(session.scalars(recent))
    if not ids:
        return 0, 0
    bounced = session.scalar(
        select(func.count(SentMessage.id)).where(
            SentMessage.id.in_(ids),
            exists().where(Event.sent_message_id == SentMessage.id, Event.kind == "bounce"),
        )
    )
    return int(bounced or 0), len(ids)


def over_threshold(bounced: int, sends: int, settings: Settings) -> bool:
    guard = settings.sending
    return sends >= guard.bounce_guard_min_sends and bounced * 100 > (
        guard.bounce_guard_percent * sends
    )


def describe(bounced: int, sends: int, settings: Settings) -> str:
    return (
        f"bounce guard: {bounced} of the last {sends} sends hard-bounced "
        f"({bounced * 100 / sends:.0f} %, above {settings.sending.bounce_guard_percent} %)"
    )


def guard_after_hard_bounce(
    session: Session, sent: SentMessage, now: datetime, settings: Settings
) -> None:
    """Pause the bounced message's mailbox and sequence if their recent rate is too high."""
    window = settings.sending.bounce_guard_sends
    bounced, sends = recent_hard_bounces(session, window, mailbox_id=sent.mailbox_id)
    if over_threshold(bounced, sends, settings):
        reason = describe(bounced, sends, settings)
        if pause_mailbox(session, sent.mailbox_id, reason, now, None):
            mailbox = session.get_one(Mailbox, sent.mailbox_id)
            _tell_team(session, sent.team_id, "mailbox", mailbox.id, mailbox.email, reason, now)
    enrollment = session.get(Enrollment, sent.enrollment_id) if sent.enrollment_id else None
    if enrollment is None:
        return
    sequence = session.get_one(Sequence, enrollment.sequence_id)
    bounced, sends = recent_hard_bounces(session, window, sequence_id=sequence.id)
    if not over_threshold(bounced, sends, settings):
        return
    if session.get(SequencePause, sequence.id) is not None:
        return
    reason = describe(bounced, sends, settings)
    session.add(SequencePause(sequence_id=sequence.id, team_id=sequence.team_id, reason=reason))
    session.flush()
    log.warning("sequence_paused sequence_id=%s reason=%r", sequence.id, reason)
    _tell_team(session, sequence.team_id, "sequence", sequence.id, sequence.name, reason, now)


def _tell_team(
    session: Session, team_id: int, what: str, what_id: int, name: str, reason: str, now: datetime
) -> None:
    """A Live Feed item for everyone in the team (and the log line the pause wrote)."""
    text = f"Sending paused for {what} {name}: {reason}. Resume it on the Mailboxes page."
    record_event(
        session,
        team_id=team_id,
        key=natural_key("sending_paused", what, what_id, now.isoformat()),
        kind="sending_paused",
        occurred_at=now,
        data={"text": text, "paused": what, "paused_id": what_id, "reason": reason},
    )
