"""When a sequence may send to one prospect: their zone, the sequence's window, the wait.

`timing(sequence, prospect)` is the zone (the prospect's own, else the
sequence's) and window a step or an out-of-office resume is held to.
`hold_for_window` is the claim's first question: outside the window, the due
step is moved to the next opening with the reason the enrolment shows
("waiting for the send window: Mon 08:00 Europe/Berlin"), by the same kind of
conditional UPDATE as the claim (state active, same step, still due), so a
reply or a person's pause racing it wins. Emails written in the web app
(`worker.sequences.oneoff`) never come here: the person chose their time.
Never commits.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.models import Enrollment, EnrollmentState, Prospect, SentMessage, Sequence
from core.zones.inference import ZoneGuess, from_domain, from_phone
from core.zones.names import check_zone, zone
from core.zones.windows import DAY_NAMES, SendWindow, next_opening

log = logging.getLogger(__name__)


def window_of(sequence: Sequence) -> SendWindow:
    holidays = frozenset(date.fromisoformat(d) for d in sequence.holidays or [])
    return SendWindow(
        days=sequence.send_days,
        start_minute=sequence.send_start_minute,
        end_minute=sequence.send_end_minute,
        holidays=holidays,
    )


def zone_name(sequence: Sequence, prospect: Prospect | None) -> str:
    """The prospect's zone if known (set or inferred), else the sequence's default."""
    return (prospect.time_zone if prospect else None) or sequence.time_zone or "UTC"


def timing(sequence: Sequence, prospect: Prospect | None) -> tuple[ZoneInfo, SendWindow]:
    return zone(zone_name(sequence, prospect)), window_of(sequence)


def opening_text(opening: datetime, tz: ZoneInfo, now: datetime) -> str:
    """'Mon 08:00 Europe/Berlin'; the date too when it is a week or more away."""
    local = opening.astimezone(tz)
    day = DAY_NAMES[local.weekday()]
    if opening - now >= timedelta(days=6):
        day += f" {local:%Y-%m-%d}"
    return f"{day} {local:%H:%M} {tz.key}"


def hold_for_window(session: Session, enrollment: Enrollment, now: datetime) -> bool:
    """True if the step must wait (moved to the window's next opening), False to claim now."""
    sequence = session.get_one(Sequence, enrollment.sequence_id)
    prospect = session.get(Prospect, enrollment.prospect_id)
    tz, window = timing(sequence, prospect)
    opening = next_opening(now, tz, window)
    if opening <= now:
        return False
    reason = f"waiting for the send window: {opening_text(opening, tz, now)}"
    moved = session.execute(
        update(Enrollment)
        .where(
            Enrollment.id == enrollment.id,
            Enrollment.state == EnrollmentState.ACTIVE,
            Enrollment.next_step == enrollment.next_step,
            Enrollment.next_step_at <= now,
        )
        .values(next_step_at=opening, wait_reason=reason)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount == 1:  # type: ignore[attr-defined]
        log.info(
            "step_waits_for_window enrollment_id=%s step=%s opens_at=%s zone=%s",
            enrollment.id,
            enrollment.next_step,
            opening.isoformat(),
            tz.key,
        )
    return True


def resume_timing(session: Session, sent: SentMessage) -> tuple[ZoneInfo, SendWindow] | None:
    """The zone and window an out-of-office answer to `sent` resumes in (None: no sequence)."""
    if sent.enrollment_id is None:
        return None
    enrollment = session.get(Enrollment, sent.enrollment_id)
    if enrollment is None:
        return None
    return timing(enrollment.sequence, enrollment.prospect)


_RANK = {"set": 0, "salesforce": 1, "phone": 2, "domain": 3}


def set_zone(prospect: Prospect, name: str | None) -> None:
    """A zone a person chose (checked: ZoneError); None or "" forgets it: the domain speaks."""
    if not name:
        prospect.time_zone = prospect.time_zone_source = prospect.time_zone_note = None
        learn_zone(prospect, from_domain(prospect.email))
        return
    prospect.time_zone, prospect.time_zone_source = check_zone(name), "set"
    prospect.time_zone_note = None


def learn_zone(prospect: Prospect, guess: ZoneGuess | None) -> bool:
    """Take `guess` unless what the prospect has came from a better source. True if taken."""
    if guess is None:
        return False
    current = _RANK.get(prospect.time_zone_source or "", len(_RANK))
    if _RANK[guess.source] > current:
        return False
    prospect.time_zone, prospect.time_zone_source = guess.zone, guess.source
    prospect.time_zone_note = guess.note[:200]
    return True


def zone_columns(guess: ZoneGuess | None) -> dict[str, str | None]:
    """A new prospect's zone columns from a guess: for bulk inserts."""
    if guess is None:
        return {"time_zone": None, "time_zone_source": None, "time_zone_note": None}
    return {
        "time_zone": guess.zone,
        "time_zone_source": guess.source,
        "time_zone_note": guess.note[:200],
    }


def apply_zones(
    session: Session, team_id: int, people: list[tuple[str, str | None, str | None]]
) -> None:
    """(email, zone from a file, phone) of new enrolments: a zone is set, a phone guesses."""
    wanted = {email: (zone_name, phone) for email, zone_name, phone in people if zone_name or phone}
    emails = list(wanted)
    for start in range(0, len(emails), 500):
        for prospect in session.scalars(
            select(Prospect).where(
                Prospect.team_id == team_id, Prospect.email.in_(emails[start : start + 500])
            )
        ):
            zone_name, phone = wanted[prospect.email]
            if zone_name:
                set_zone(prospect, zone_name)
            else:
                learn_zone(prospect, from_phone(phone))
