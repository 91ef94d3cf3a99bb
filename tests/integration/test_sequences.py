"""A step is never sent after a reply was recorded: the claim/reply race, on both engines."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from sqlalchemy import select

from config import Settings
from core.crypto import encrypt_json
from core.db import get_sessionmaker, session_scope
from core.models import (
    Enrollment,
    EnrollmentState,
    EnrollmentTransition,
    Mailbox,
    SendStatus,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    utcnow,
)
from worker.sequences import claiming, delivering, enrolling
from worker.sync.inbound import MailboxRef, handle_inbound
from worker.sync.mime import summarize_headers

SENDER = "rep@seller.test"


@pytest.fixture
def enrollment_id(env: Settings) -> int:
    now = utcnow()
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id, kind="imap", email=SENDER, credentials_encrypted=encrypt_json({})
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Intro")
        sequence.steps = [
            SequenceStep(
                position=0, delay_seconds=0, subject="Hi {{first_name}}", body_html="<p>One</p>"
            ),
            SequenceStep(
                position=1, delay_seconds=3600, subject="", body_html="<p>Two</p>", same_thread=True
            ),
        ]
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session,
            sequence=sequence,
            email="Dana@Acme.test",
            name="Dana Scully",
            now=now - timedelta(seconds=1),
        )
        return enrollment.id


def claim(enrollment_id: int) -> int | None:
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, utcnow())
        return sent.id if sent else None


def reply_to(message_id: str, author: str = "colleague@acme.test") -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = SENDER
    msg["Subject"] = "Re: Hi Dana"
    msg["Message-ID"] = make_msgid(domain="acme.test")
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg.set_content("Sounds good, let's talk Tuesday.\n")
    return msg.as_bytes()


def mailbox_ref() -> MailboxRef:
    with session_scope() as session:
        mailbox = session.scalars(select(Mailbox)).one()
        return MailboxRef(mailbox.id, mailbox.team_id, mailbox.email)


def mark_sent(sent_id: int) -> str:
    with session_scope() as session:
        sent = session.get_one(SentMessage, sent_id)
        sent.status = SendStatus.SENT
        sent.sent_at = utcnow()
        return sent.message_id


def test_a_due_step_is_claimed_once(enrollment_id: int) -> None:
    first = claim(enrollment_id)
    assert first is not None
    assert claim(enrollment_id) is None
    with session_scope() as session:
        sent = session.get_one(SentMessage, first)
        assert sent.subject == "Hi Dana"
        assert sent.message_id.startswith("<") and sent.message_id.endswith("@seller.test>")
        enrollment = session.get_one(Enrollment, enrollment_id)
        assert (enrollment.next_step, enrollment.next_step_at) == (1, None)


def test_same_thread_step_answers_the_previous_message(enrollment_id: int) -> None:
    first_id = claim(enrollment_id)
    assert first_id is not None
    first_message_id = mark_sent(first_id)
    with session_scope() as session:
        session.get_one(Enrollment, enrollment_id).next_step_at = utcnow()
    second_id = claim(enrollment_id)
    with session_scope() as session:
        second = session.get_one(SentMessage, second_id)
        assert second.in_reply_to == first_message_id
        assert second.references == first_message_id
        assert second.subject == "Re: Hi Dana"


def test_no_claim_after_a_reply(enrollment_id: int) -> None:
    first = claim(enrollment_id)
    assert first is not None
    message_id = mark_sent(first)
    raw = reply_to(message_id)
    with session_scope() as session:
        outcome = handle_inbound(session, mailbox_ref(), summarize_headers(raw, "x"), raw)
    assert outcome.status == "recorded"
    with session_scope() as session:
        session.get_one(Enrollment, enrollment_id).next_step_at = utcnow()  # step 2 falls due
    assert claim(enrollment_id) is None
    with session_scope() as session:
        enrollment = session.get_one(Enrollment, enrollment_id)
        assert enrollment.state == "replied"
        assert enrollment.state_reason == "reply from colleague@acme.test"


def test_claim_waits_for_a_reply_in_progress_and_then_finds_nothing(
    enrollment_id: int,
) -> None:
    """The reply's transaction holds the row; the claim waits, then sees 'replied'."""
    first = claim(enrollment_id)
    assert first is not None
    raw = reply_to(mark_sent(first))
    with session_scope() as session:
        session.get_one(Enrollment, enrollment_id).next_step_at = utcnow()
    claimed: list[int | None] = []
    reply_session = get_sessionmaker()()
    try:
        handle_inbound(reply_session, mailbox_ref(), summarize_headers(raw, "x"), raw)
        contender = threading.Thread(target=lambda: claimed.append(claim(enrollment_id)))
        contender.start()
        time.sleep(0.5)
        assert contender.is_alive(), "the claim must wait for the reply's transaction"
        reply_session.commit()
    finally:
        reply_session.close()
    contender.join(timeout=30)
    assert claimed == [None]


def test_reply_after_the_claim_cancels_the_hand_over(enrollment_id: int) -> None:
    first = claim(enrollment_id)
    assert first is not None
    raw = reply_to(mark_sent(first))
    with session_scope() as session:
        session.get_one(Enrollment, enrollment_id).next_step_at = utcnow()
    second = claim(enrollment_id)
    assert second is not None  # claimed before the reply was recorded...
    with session_scope() as session:
        handle_inbound(session, mailbox_ref(), summarize_headers(raw, "x"), raw)
    outcome = delivering.deliver(second)  # ...so the hand-over re-checks and stops
    assert outcome.status == "cancelled"
    with session_scope() as session:
        assert session.get_one(SentMessage, second).status == SendStatus.CANCELLED


def test_many_racing_claims_and_a_reply(enrollment_id: int) -> None:
    """Eight claimers and one reply at once: one claim at most, and only before the reply."""
    first = claim(enrollment_id)
    assert first is not None
    raw = reply_to(mark_sent(first))
    with session_scope() as session:
        session.get_one(Enrollment, enrollment_id).next_step_at = utcnow()
    barrier = threading.Barrier(9)
    results: list[int | None] = []

    def claimer() -> None:
        barrier.wait()
        results.append(claim(enrollment_id))

    def replier() -> None:
        barrier.wait()
        with session_scope() as session:
            handle_inbound(session, mailbox_ref(), summarize_headers(raw, "x"), raw)

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    threads.append(threading.Thread(target=replier))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    won = [r for r in results if r is not None]
    assert len(won) <= 1
    with session_scope() as session:
        replied_at = session.scalars(
            select(EnrollmentTransition.at).where(EnrollmentTransition.to_state == "replied")
        ).one()
        if won:
            sent = session.get_one(SentMessage, won[0])
            assert sent.claimed_at <= replied_at
            assert delivering.deliver(won[0]).status == "cancelled"


def test_a_pause_after_the_claim_gives_the_step_back(enrollment_id: int) -> None:
    """An out-of-office lands between the claim and the hand-over: the step waits, not lost."""
    first = claim(enrollment_id)
    assert first is not None
    with session_scope() as session:
        assert enrolling.transition(
            session,
            enrollment_id,
            EnrollmentState.PAUSED,
            "auto-reply",
            from_states={EnrollmentState.ACTIVE},
            resume_at=utcnow() - timedelta(seconds=1),
        )
    assert delivering.deliver(first).status == "cancelled"
    with session_scope() as session:
        assert session.get_one(Enrollment, enrollment_id).next_step == 0
        assert enrolling.resume_due(session, utcnow()) == 1
    again = claim(enrollment_id)
    assert again is not None
    with session_scope() as session:
        retry = session.get_one(SentMessage, again)
        assert (retry.step_position, retry.attempt) == (0, 1)
