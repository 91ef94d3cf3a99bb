"""Opens, clicks and document views: counted once each, one debounced Task update.

`queue_engagement` is what the tracking and document workers call; these
tests hold it to its contract on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from config import Settings, get_settings
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
from core.redis import get_redis
from tests.fakes.salesforce import FakeSalesforce
from worker.salesforce.budget import OrgBudget
from worker.salesforce.engagement import engagement_key, queue_engagement, sent_task_key
from worker.salesforce.outbox import flush_team


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


# -- writing engagement to the sent email's Task ------------------------------------------


@pytest.fixture
def org(
    fake_salesforce: FakeSalesforce, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> FakeSalesforce:
    fake_salesforce.reset()
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", fake_salesforce.instance_url)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", fake_salesforce.access_token)
    get_settings.cache_clear()
    return fake_salesforce


def team_of(sent_id: int) -> int:
    with session_scope() as session:
        return int(session.get_one(SentMessage, sent_id).team_id)


def make_due() -> None:
    with session_scope() as session:
        session.execute(update(SalesforceOutbox).values(next_attempt_at=utcnow()))


def engage(sent_id: int, kind: str, minute: int) -> None:
    with session_scope() as session:
        queue_engagement(session, sent_message_id=sent_id, kind=kind, occurred_at=at(minute))


def the_task(org: FakeSalesforce) -> dict[str, Any]:
    tasks = org.tasks()
    assert len(tasks) == 1
    return tasks[0]


def test_engagement_before_the_send_is_written_rides_along(org: FakeSalesforce) -> None:
    org.add_contact("dana@acme.test")
    sent_id = make_sent()
    engage(sent_id, "open", 5)
    engage(sent_id, "click", 6)
    make_due()
    stats = flush_team(team_of(sent_id))
    assert (stats.done, stats.calls) == (2, 3)  # describe, who is Dana?, one write
    task = the_task(org)
    assert (task["Sightline_Opens__c"], task["Sightline_Clicks__c"]) == (1, 1)
    assert task["Sightline_First_Opened__c"] == "2026-11-27T10:05:00.000+0000"
    assert task["TaskSubtype"] == "Email"
    assert engagement_row(sent_id).status == OutboxStatus.DONE


def test_later_engagement_updates_the_task_once_debounced(org: FakeSalesforce) -> None:
    org.add_contact("dana@acme.test")
    sent_id = make_sent()
    team = team_of(sent_id)
    flush_team(team)
    created = the_task(org)
    assert created["Sightline_Opens__c"] is None

    for minute in (10, 20, 30):
        engage(sent_id, "open", minute)
    engage(sent_id, "document_view", 40)
    assert flush_team(team).claimed == 0  # debounced: not due yet
    make_due()
    used = org.api_usage[0]
    stats = flush_team(team)
    assert stats.done == 1
    assert org.api_usage[0] == used + 1  # one composite write, nothing to look up
    task = the_task(org)
    assert task["Id"] == created["Id"]
    assert (task["Sightline_Opens__c"], task["Sightline_Document_Views__c"]) == (3, 1)
    assert task["Sightline_Last_Opened__c"] == "2026-11-27T10:30:00.000+0000"
    assert task["Sightline_Last_Viewed__c"] == "2026-11-27T10:40:00.000+0000"

    engage(sent_id, "open", 50)
    make_due()
    flush_team(team)
    assert the_task(org)["Sightline_Opens__c"] == 4


def test_engagement_waits_while_the_org_is_above_the_budget_share(org: FakeSalesforce) -> None:
    org.add_contact("dana@acme.test")
    sent_id = make_sent()
    team = team_of(sent_id)
    org.set_api_usage(8_500, 10_000)
    flush_team(team)  # the send goes, and tells us the org is at 85 %
    engage(sent_id, "open", 1)
    make_due()
    stats = flush_team(team)
    assert stats.deferred and stats.claimed == 0
    assert engagement_row(sent_id).status == OutboxStatus.PENDING
    assert the_task(org)["Sightline_Opens__c"] is None

    with session_scope() as session:  # a send still goes while engagement waits
        queue_salesforce_task(
            session,
            team_id=team,
            key="task:reply:1",
            kind="task_reply",
            who_email="dana@acme.test",
            event_id=None,
            payload={"subject": "Reply: hi", "description": "Thanks"},
        )
    assert flush_team(team).done == 1
    assert engagement_row(sent_id).status == OutboxStatus.PENDING

    # A day later the org has room again; the stale reading is checked with one call.
    org.set_api_usage(100, 10_000)
    budget = OrgBudget("default")
    usage = budget.usage()
    assert usage is not None
    get_redis().set(
        "sightline:sf:usage:default",
        json.dumps({"used": usage.used, "max": usage.max, "at": usage.at - 3600}),
    )
    stats = flush_team(team)
    assert not stats.deferred and stats.done == 1
    assert [t["Sightline_Opens__c"] for t in org.tasks() if t["Subject"].startswith("Email")] == [1]


def test_a_task_deleted_in_salesforce_is_not_recreated(org: FakeSalesforce) -> None:
    org.add_contact("dana@acme.test")
    sent_id = make_sent()
    team = team_of(sent_id)
    flush_team(team)
    org.delete(the_task(org)["Id"])
    engage(sent_id, "open", 1)
    make_due()
    assert flush_team(team).done == 1
    row = engagement_row(sent_id)
    assert (row.status, row.last_error) == ("done", "the email's Task was deleted in Salesforce")
    assert org.tasks() == []


def test_an_org_without_the_engagement_fields_still_gets_its_tasks(org: FakeSalesforce) -> None:
    org.configure(counter_fields=False)
    org.add_contact("dana@acme.test")
    sent_id = make_sent()
    engage(sent_id, "open", 1)
    make_due()
    assert flush_team(team_of(sent_id)).done == 2
    assert "Sightline_Opens__c" not in the_task(org)
    assert engagement_row(sent_id).status == OutboxStatus.DONE
    flush_team(team_of(sent_id))
    engage(sent_id, "open", 2)
    make_due()
    flush_team(team_of(sent_id))
    row = engagement_row(sent_id)
    assert (row.status, row.last_error) == ("done", "the org has no Sightline engagement fields")


def test_engagement_of_an_email_whose_task_waits_for_a_person(org: FakeSalesforce) -> None:
    sent_id = make_sent()  # dana@acme.test is in no Contact or Lead yet
    engage(sent_id, "open", 1)
    make_due()
    flush_team(team_of(sent_id))
    with session_scope() as session:
        send = session.scalars(
            select(SalesforceOutbox).where(SalesforceOutbox.key == sent_task_key(sent_id))
        ).one()
    assert send.status == OutboxStatus.WAITING_WHO
    row = engagement_row(sent_id)
    assert (row.status, row.last_error, row.attempts) == (
        "pending",
        "waiting for the email's Task",
        0,
    )
