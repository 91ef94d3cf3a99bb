"""Opens, clicks and document views: counted once each, one debounced Task update.

`queue_engagement` is what the tracking and document workers call; these
tests hold it to its contract on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from config import Settings
from core.db import session_scope
from core.events import queue_salesforce_task
from core.models import (
    Mailbox,
    OutboxStatus,
    Prospect,
    SalesforceEngagement,
    SalesforceOutbox,
    SentMessage,
    Team,
    utcnow,
)
from worker.salesforce.engagement import engagement_key, queue_engagement, sent_task_key


def make_sent(team_name: str = "Sales", *, owe_task: bool = True) -> int:
    """A sent email to dana@acme.test, with the Task the send owes Salesforce."""
    with session_scope() as session:
        team = Team(name=team_name)
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id, kind="imap", email="rep@seller.test", credentials_encrypted="-"
        )
        prospect = Prospect(team_id=team.id, email="dana@acme.test", name="Dana Scully")
        session.add_all([mailbox, prospect])
        session.flush()
        sent = SentMessage(
            team_id=team.id,
            mailbox_id=mailbox.id,
            prospect_id=prospect.id,
            message_id=f"<{team_name}.1@seller.test>",
            subject="Hello Dana",
            to_addrs=["dana@acme.test"],
            status="sent",
            sent_at=utcnow(),
        )
        session.add(sent)
        session.flush()
        if owe_task:
            queue_salesforce_task(
                session,
                team_id=team.id,
                key=sent_task_key(sent.id),
                kind="task_sent",
                who_email="dana@acme.test",
                event_id=None,
                payload={"subject": "Email: Hello Dana", "description": "Hi"},
            )
        return sent.id


def at(minute: int) -> datetime:
    return datetime(2026, 11, 27, 10, minute, tzinfo=UTC)


def summary(sent_id: int) -> SalesforceEngagement:
    with session_scope() as session:
        return session.scalars(
            select(SalesforceEngagement).where(SalesforceEngagement.sent_message_id == sent_id)
        ).one()


def engagement_row(sent_id: int) -> SalesforceOutbox:
    with session_scope() as session:
        return session.scalars(
            select(SalesforceOutbox).where(SalesforceOutbox.key == engagement_key(sent_id))
        ).one()


def test_counts_and_widens_first_and_last_times(env: Settings) -> None:
    sent_id = make_sent()
    with session_scope() as session:
        for kind, minute in [("open", 30), ("open", 10), ("open", 50), ("click", 20)]:
            assert queue_engagement(
                session, sent_message_id=sent_id, kind=kind, occurred_at=at(minute)
            )
        queue_engagement(session, sent_message_id=sent_id, kind="document_view", occurred_at=at(5))
    row = summary(sent_id)
    assert (row.opens, row.clicks, row.document_views) == (3, 1, 1)
    assert (row.first_opened_at, row.last_opened_at) == (at(10), at(50))
    assert (row.first_clicked_at, row.last_clicked_at) == (at(20), at(20))
    assert (row.first_viewed_at, row.last_viewed_at) == (at(5), at(5))
    assert row.team_id is not None


def test_one_debounced_update_owed_however_many_hits(env: Settings) -> None:
    sent_id = make_sent()
    before = utcnow()
    with session_scope() as session:
        queue_engagement(session, sent_message_id=sent_id, kind="open", occurred_at=at(1))
    first_due = engagement_row(sent_id).next_attempt_at
    debounce = timedelta(seconds=env.salesforce.engagement_debounce_seconds)
    assert before + debounce <= first_due <= utcnow() + debounce
    with session_scope() as session:
        for minute in range(2, 12):
            queue_engagement(session, sent_message_id=sent_id, kind="click", occurred_at=at(minute))
    with session_scope() as session:
        rows = session.scalars(
            select(SalesforceOutbox).where(SalesforceOutbox.kind == "task_engagement")
        ).all()
    assert len(rows) == 1
    assert rows[0].status == OutboxStatus.PENDING
    assert rows[0].next_attempt_at == first_due  # later hits never push the write back
    assert rows[0].payload == {"sent_message_id": sent_id}
    assert rows[0].who_email == "dana@acme.test"


@pytest.mark.parametrize("was", [OutboxStatus.DONE, OutboxStatus.IN_FLIGHT])
def test_new_engagement_reopens_a_written_or_held_update(env: Settings, was: str) -> None:
    sent_id = make_sent()
    with session_scope() as session:
        queue_engagement(session, sent_message_id=sent_id, kind="open", occurred_at=at(1))
        session.execute(
            update(SalesforceOutbox)
            .where(SalesforceOutbox.key == engagement_key(sent_id))
            .values(status=was, claim_token="flusher-1", attempts=3)
        )
    with session_scope() as session:
        queue_engagement(session, sent_message_id=sent_id, kind="open", occurred_at=at(2))
    row = engagement_row(sent_id)
    assert row.status == OutboxStatus.PENDING
    assert row.next_attempt_at > utcnow()
    if was == OutboxStatus.IN_FLIGHT:
        assert row.claim_token is None  # the flusher's settle will find nothing to settle
        assert row.attempts == 3
    else:
        assert row.attempts == 0
    assert summary(sent_id).opens == 2


def test_a_dead_letter_stays_for_a_person_to_replay(env: Settings) -> None:
    sent_id = make_sent()
    with session_scope() as session:
        queue_engagement(session, sent_message_id=sent_id, kind="open", occurred_at=at(1))
        session.execute(
            update(SalesforceOutbox)
            .where(SalesforceOutbox.key == engagement_key(sent_id))
            .values(status=OutboxStatus.FAILED)
        )
    with session_scope() as session:
        queue_engagement(session, sent_message_id=sent_id, kind="open", occurred_at=at(2))
    assert engagement_row(sent_id).status == OutboxStatus.FAILED
    assert summary(sent_id).opens == 2  # counted all the same: a replay writes 2


def test_no_task_no_update_but_still_counted(env: Settings) -> None:
    sent_id = make_sent(owe_task=False)
    with session_scope() as session:
        assert not queue_engagement(
            session, sent_message_id=sent_id, kind="open", occurred_at=at(1)
        )
        assert session.scalar(select(SalesforceOutbox.id)) is None
    assert summary(sent_id).opens == 1


def test_bad_arguments_name_the_field(env: Settings) -> None:
    sent_id = make_sent()
    with session_scope() as session:
        with pytest.raises(ValueError, match=r"^kind: expected one of open, click, document_view"):
            queue_engagement(session, sent_message_id=sent_id, kind="view", occurred_at=at(1))
        with pytest.raises(ValueError, match=r"^occurred_at: "):
            queue_engagement(
                session, sent_message_id=sent_id, kind="open", occurred_at=datetime(2026, 1, 1)
            )
        with pytest.raises(ValueError, match=r"^sent_message_id: "):
            queue_engagement(session, sent_message_id=sent_id + 99, kind="open", occurred_at=at(1))


def test_a_rolled_back_event_counts_nothing(env: Settings) -> None:
    sent_id = make_sent()
    with pytest.raises(RuntimeError), session_scope() as session:
        queue_engagement(session, sent_message_id=sent_id, kind="open", occurred_at=at(1))
        raise RuntimeError("the event's transaction failed")
    with session_scope() as session:
        assert session.scalar(select(SalesforceEngagement.id)) is None
        assert (
            session.scalar(
                select(SalesforceOutbox.id).where(SalesforceOutbox.kind == "task_engagement")
            )
            is None
        )
