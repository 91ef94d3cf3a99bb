"""Provider quotas through the real providers against the fakes: the mailbox waits, no step fails.

Gmail answers 429 rateLimitExceeded ("Retry after <time>"), Graph 429 with
Retry-After; Exchange Online takes a send over its daily quota and answers with
a 5.2.2 SubmissionQuotaExceeded non-delivery report, which must pause the
mailbox and re-send the step, never blame the prospect's address.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Enrollment,
    EnrollmentState,
    Mailbox,
    Prospect,
    SendStatus,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    utcnow,
)
from tests.integration.provider_harness import GmailHarness, GraphHarness, Harness
from worker.sequences import claiming, delivering, enrolling
from worker.sync.engine import sync_mailbox
from worker.sync.quota import next_utc_midnight

PROSPECT = "dana@acme.test"


def seller(harness: Harness) -> tuple[int, int, str]:
    """(mailbox, enrolment): a mailbox of this provider and a due first step."""
    address = harness.new_address()
    now = utcnow()
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id,
            kind=harness.kind,
            email=address,
            credentials_encrypted=encrypt_json(harness.credentials(address)),
            created_at=now - timedelta(minutes=5),
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(
            team_id=team.id,
            mailbox_id=mailbox.id,
            name="Intro",
            send_days=127,
            send_start_minute=0,
            send_end_minute=24 * 60,
        )
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="<p>Hi</p>"),
            SequenceStep(position=1, delay_seconds=3600, subject="Again", body_html="<p>Bump</p>"),
        ]  # fmt: skip
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session, sequence=sequence, email=PROSPECT, name=None, now=now - timedelta(seconds=1)
        )
        return mailbox.id, enrollment.id, address


def claim(enrollment_id: int, when: Any = None) -> int | None:
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, when or utcnow())
        return sent.id if sent else None


def rows(mailbox_id: int, enrollment_id: int) -> tuple[Mailbox, Enrollment]:
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        enrollment = session.get_one(Enrollment, enrollment_id)
        session.expunge_all()
        return mailbox, enrollment


@pytest.fixture(params=["gmail", "graph"])
def throttling(request: pytest.FixtureRequest) -> Harness:
    if request.param == "gmail":
        return GmailHarness(request.getfixturevalue("fake_gmail"))
    return GraphHarness(request.getfixturevalue("fake_graph"))


def test_a_rate_limited_send_pauses_the_mailbox_and_the_step_goes_after_it(
    env: Settings, throttling: Harness
) -> None:
    mailbox_id, enrollment_id, address = seller(throttling)
    assert throttling.throttle(address, 1)
    sent_id = claim(enrollment_id)
    assert sent_id is not None

    outcome = delivering.deliver(sent_id)

    assert outcome.status == "waiting", outcome
    mailbox, enrollment = rows(mailbox_id, enrollment_id)
    assert mailbox.paused_until is not None and mailbox.paused_until > utcnow()
    assert mailbox.paused_until < utcnow() + timedelta(minutes=2)  # the provider's own wait
    assert "rate limit" in (mailbox.pause_reason or "") or "throttled" in (
        mailbox.pause_reason or ""
    )
    assert (enrollment.state, enrollment.next_step) == (EnrollmentState.ACTIVE, 0)
    assert enrollment.next_step_at == mailbox.paused_until
    assert (enrollment.wait_reason or "").startswith("waiting: mailbox paused until ")
    with session_scope() as session:
        assert session.get_one(SentMessage, sent_id).status == SendStatus.CANCELLED
    assert claim(enrollment_id) is None  # still paused

    again = claim(enrollment_id, mailbox.paused_until + timedelta(seconds=1))
    assert again is not None
    assert delivering.deliver(again).status == "sent"
    # Sent once: the refused attempt never reached the provider.
    assert [c.message_id for c in throttling.sent_copies(address)] == [_message_id(again)]


def _message_id(sent_id: int) -> str:
    with session_scope() as session:
        return session.get_one(SentMessage, sent_id).message_id


def test_an_exchange_online_quota_report_pauses_the_mailbox_and_blames_no_address(
    env: Settings, fake_graph: Any
) -> None:
    harness = GraphHarness(fake_graph)
    mailbox_id, enrollment_id, address = seller(harness)
    fake_graph.exceed_submission_quota(address)
    sent_id = claim(enrollment_id)
    assert sent_id is not None
    assert delivering.deliver(sent_id).status == "sent"  # Graph took it (202)

    sync_mailbox(mailbox_id)  # the NDR in the Inbox

    now = utcnow()
    mailbox, enrollment = rows(mailbox_id, enrollment_id)
    assert mailbox.paused_until == next_utc_midnight(now)
    assert "SubmissionQuotaExceededException" in (mailbox.pause_reason or "")
    assert (enrollment.state, enrollment.next_step) == (EnrollmentState.ACTIVE, 0)
    assert enrollment.next_step_at == mailbox.paused_until
    with session_scope() as session:
        prospect = session.scalars(select(Prospect).where(Prospect.email == PROSPECT)).one()
        assert prospect.undeliverable_at is None
    # After midnight the same step goes out again, as a new attempt.
    fake_graph.exceed_submission_quota(address, over=False)
    assert enrollment.next_step_at is not None
    again = claim(enrollment_id, enrollment.next_step_at + timedelta(seconds=1))
    assert again is not None
    assert delivering.deliver(again).status == "sent"
