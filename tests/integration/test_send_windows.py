"""Send windows through the real claim path and the real out-of-office path, on both engines.

A step due outside the window is not claimed: it waits for the next opening in
the prospect's zone, and the enrolment says so; inside the window it is claimed.
An out-of-office resumes at 08:00 in the prospect's zone on the return date
(or the window's next opening after it). Fixed dates for the claims (the claim
takes `now`); the out-of-office goes through `handle_inbound`, which reads the clock.
"""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Enrollment, Mailbox, Prospect, SentMessage, Sequence, SequenceStep, Team
from core.zones.windows import WORKDAYS
from tests.integration.test_signals import deliver_inbound, enrollment, out_of_office
from worker.sequences import claiming, delivering, enrolling
from worker.sequences.send_windows import set_zone
from worker.sync.base import SendResult

SENDER = "rep@seller.test"
PROSPECT = "dana@acme.test"
BERLIN = ZoneInfo("Europe/Berlin")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def enrol(*, zone: str = "Europe/Berlin", prospect_zone: str | None = None, at: datetime) -> int:
    """A Mon-Fri 08:00-18:00 sequence in `zone`, the prospect enrolled (step 1 due) at `at`."""
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id, kind="imap", email=SENDER, credentials_encrypted=encrypt_json({})
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(
            team_id=team.id,
            mailbox_id=mailbox.id,
            name="Intro",
            time_zone=zone,
            send_days=WORKDAYS,
            send_start_minute=8 * 60,
            send_end_minute=18 * 60,
        )
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Hello", body_html="<p>One</p>"),
            SequenceStep(position=1, delay_seconds=3600, subject="", body_html="<p>Two</p>",
                         same_thread=True),
        ]  # fmt: skip
        session.add(sequence)
        session.flush()
        found = enrolling.enroll(session, sequence=sequence, email=PROSPECT, name="Dana", now=at)
        if prospect_zone:
            set_zone(found.prospect, prospect_zone)
        return found.id


def claim_at(enrollment_id: int, now: datetime) -> int | None:
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, now)
        return sent.id if sent else None


def test_a_step_due_on_saturday_waits_for_monday_morning_in_the_sequence_zone(
    env: Settings,
) -> None:
    saturday = datetime(2027, 3, 6, 12, 0, tzinfo=UTC)
    enrollment_id = enrol(at=saturday - timedelta(minutes=1))
    assert claim_at(enrollment_id, saturday) is None
    waiting = enrollment(enrollment_id)
    monday_morning = datetime(2027, 3, 8, 7, 0, tzinfo=UTC)  # 08:00 CET
    assert (waiting.state, waiting.next_step, waiting.next_step_at) == (
        "active",
        0,
        monday_morning,
    )
    assert waiting.wait_reason == "waiting for the send window: Mon 08:00 Europe/Berlin"
    # The cron tick's query does not pick it up before then ...
    with session_scope() as session:
        assert claiming.due_enrollments(session, monday_morning - timedelta(seconds=1), 10) == []
        assert claiming.due_enrollments(session, monday_morning, 10) == [(enrollment_id, 0)]
    # ... and then it is claimed, the reason gone.
    sent_id = claim_at(enrollment_id, monday_morning)
    assert sent_id is not None
    claimed = enrollment(enrollment_id)
    assert (claimed.next_step, claimed.wait_reason) == (1, None)


def test_the_prospects_own_zone_decides_not_the_sequences(env: Settings) -> None:
    # Monday 17:30 UTC: 18:30 in Berlin (closed), 09:30 in Los Angeles (open).
    monday = datetime(2027, 3, 8, 17, 30, tzinfo=UTC)
    enrollment_id = enrol(prospect_zone="America/Los_Angeles", at=monday - timedelta(minutes=1))
    assert claim_at(enrollment_id, monday) is not None
    with session_scope() as session:
        prospect = session.query(Prospect).one()
        assert (prospect.time_zone, prospect.time_zone_source) == ("America/Los_Angeles", "set")


def test_a_step_due_in_the_night_there_waits_and_the_history_is_untouched(env: Settings) -> None:
    # Tuesday 03:00 UTC is Monday 19:00 in Los Angeles (PST): Tuesday 08:00 PST = 16:00 UTC.
    night = datetime(2027, 3, 2, 3, 0, tzinfo=UTC)
    enrollment_id = enrol(prospect_zone="America/Los_Angeles", at=night - timedelta(minutes=1))
    assert claim_at(enrollment_id, night) is None
    waiting = enrollment(enrollment_id)
    assert waiting.next_step_at == datetime(2027, 3, 2, 16, 0, tzinfo=UTC)
    assert waiting.wait_reason == "waiting for the send window: Tue 08:00 America/Los_Angeles"
    assert waiting.state_reason == "enrolled"  # a wait is no state change


def _next_weekday(weekday: int, after_days: int) -> dt.date:
    day = (datetime.now(UTC) + timedelta(days=after_days)).date()
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return day


@pytest.mark.parametrize(
    ("weekday", "resumes_weekday"), [(2, 2), (5, 0)], ids=["wednesday", "saturday-to-monday"]
)
def test_out_of_office_resumes_at_eight_in_the_prospects_zone(
    env: Settings, weekday: int, resumes_weekday: int
) -> None:
    now = datetime.now(UTC)
    enrollment_id = enrol(prospect_zone="America/Los_Angeles", at=now - timedelta(days=30))
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, now)
        if sent is None:  # outside the window right now: claim at its opening instead
            opening = session.get_one(Enrollment, enrollment_id).next_step_at
            assert opening is not None
            sent = claiming.claim_due_step(session, enrollment_id, opening)
        assert sent is not None
        sent_id, message_id = sent.id, sent.message_id
    delivering._record_sent(sent_id, SendResult(message_id=message_id))
    back = _next_weekday(weekday, 8)
    body = f"I am out of the office until {back:%d %B %Y} with limited access to email."
    outcome = deliver_inbound(out_of_office(message_id, PROSPECT, SENDER, body))
    assert (outcome.status, outcome.kind) == ("recorded", "auto_reply")
    paused = enrollment(enrollment_id)
    assert paused.state == "paused" and paused.resume_at is not None
    local = paused.resume_at.astimezone(LOS_ANGELES)
    assert (local.weekday(), local.hour, local.minute) == (resumes_weekday, 8, 0)
    assert local.date() - back < timedelta(days=3)
    assert paused.state_reason is not None
    assert paused.state_reason.endswith(f"resumes {local:%Y-%m-%d} 08:00 America/Los_Angeles")
    with session_scope() as session:
        assert session.get_one(SentMessage, sent_id).status == "sent"
        assert session.query(Sequence).one().time_zone == "Europe/Berlin"
