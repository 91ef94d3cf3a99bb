"""The Salesforce outbox against the TLS fake org, through simple-salesforce.

What a sales team would check on their timeline: one Task per email and per
reply, on the right Contact/Lead, never two — whatever Salesforce throws.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from config import Settings, get_settings
from core.db import session_scope
from core.events import queue_salesforce_task
from core.models import SalesforceOutbox, Team, utcnow
from core.redis import get_redis
from tests.fakes.salesforce import FakeSalesforce
from worker.salesforce.budget import OrgBudget
from worker.salesforce.outbox import KEY_LINE, flush_team, replay_failed, task_key


@pytest.fixture
def team_id(env: Settings) -> int:
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        return team.id


def use_org(fake: FakeSalesforce, monkeypatch: pytest.MonkeyPatch, **config: object) -> None:
    """Start a fresh fake org (configured as asked) and point our settings at it."""
    fake.reset(**config)
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", fake.instance_url)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", fake.access_token)
    get_settings.cache_clear()


@pytest.fixture
def salesforce(
    fake_salesforce: FakeSalesforce, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> FakeSalesforce:
    use_org(fake_salesforce, monkeypatch)
    return fake_salesforce


def owe(team_id: int, count: int, email: str = "dana@acme.test", start: int = 0) -> list[str]:
    keys = []
    with session_scope() as session:
        for n in range(start, start + count):
            key = f"task:sent:{n}"
            queue_salesforce_task(
                session,
                team_id=team_id,
                key=key,
                kind="task_sent",
                who_email=email,
                event_id=None,
                payload={
                    "subject": f"Email: hello {n}",
                    "description": "To: dana@acme.test\n\nHi Dana",
                    "activity_date": utcnow().date().isoformat(),
                },
            )
            keys.append(key)
    return keys


def statuses() -> Counter[str]:
    with session_scope() as session:
        return Counter(session.scalars(select(SalesforceOutbox.status)))


def make_due_now() -> None:
    """Time passes: every backed-off or leased row is due again."""
    with session_scope() as session:
        session.execute(
            update(SalesforceOutbox).values(
                next_attempt_at=utcnow() - timedelta(seconds=1),
                claimed_at=utcnow() - timedelta(days=1),
            )
        )


def keys_in_salesforce(fake: FakeSalesforce) -> Counter[str]:
    return Counter(
        str(t.get("Sightline_Key__c") or t["Description"].rpartition(KEY_LINE)[2])
        for t in fake.tasks()
    )


def test_one_task_per_row_on_the_contact(salesforce: FakeSalesforce, team_id: int) -> None:
    contact = salesforce.add_contact("Dana@Acme.test", last_name="Scully")
    owe(team_id, 3)
    owe(team_id, 1, email="nobody@acme.test", start=100)
    stats = flush_team(team_id)
    assert (stats.done, stats.waiting_who) == (3, 1)
    tasks = salesforce.tasks()
    assert len(tasks) == 3
    assert {t["WhoId"] for t in tasks} == {contact}
    assert {t["TaskSubtype"] for t in tasks} == {"Email"}
    assert {t["Status"] for t in tasks} == {"Completed"}
    assert sorted(t["Subject"] for t in tasks) == [
        "Email: hello 0",
        "Email: hello 1",
        "Email: hello 2",
    ]
    assert statuses() == {"done": 3, "waiting_who": 1}
    assert flush_team(team_id).claimed == 0
    assert len(salesforce.tasks()) == 3


def test_lead_when_no_contact_and_held_until_one_appears(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    converted_to = salesforce.add_contact("dana.new@acme.test")
    salesforce.add_lead("converted@acme.test", converted_to=converted_to)
    owe(team_id, 1, email="converted@acme.test")
    owe(team_id, 1, email="lead@acme.test", start=1)
    flush_team(team_id)
    # A converted Lead is followed to its Contact, whatever that Contact's address.
    assert statuses() == {"done": 1, "waiting_who": 1}
    lead = salesforce.add_lead("lead@acme.test", last_name="Lee")
    get_redis().delete(*get_redis().keys("sightline:sf:who:*"))
    make_due_now()
    flush_team(team_id)
    assert [t["WhoId"] for t in salesforce.tasks()] == [converted_to, lead]


@pytest.mark.parametrize("has_key_field", [True, False], ids=["upsert", "fallback"])
@pytest.mark.parametrize("fault", ["commit_then_drop", "commit_then_hang"])
def test_write_accepted_but_unanswered_is_never_doubled(
    salesforce: FakeSalesforce,
    team_id: int,
    monkeypatch: pytest.MonkeyPatch,
    has_key_field: bool,
    fault: str,
) -> None:
    use_org(salesforce, monkeypatch, ext_id_field=has_key_field)
    salesforce.add_contact("dana@acme.test")
    keys = owe(team_id, 5)
    # skip=1: the flush's first call reads (who is Dana?); its second writes.
    salesforce.faults.add(fault, count=1, match="composite", seconds=3, skip=1)
    monkeypatch.setenv("SIGHTLINE_SALESFORCE_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    first = flush_team(team_id)
    assert first.done == 0
    assert len(salesforce.tasks()) == 5  # Salesforce has them; we never heard back
    make_due_now()
    flush_team(team_id)
    assert statuses() == {"done": 5}
    assert keys_in_salesforce(salesforce) == Counter(task_key(k) for k in keys)


def test_request_limit_parks_the_team_without_spending_attempts(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 2)
    salesforce.faults.add("request_limit_exceeded", count=None)
    stats = flush_team(team_id)
    assert stats.done == 0
    assert statuses() == {"pending": 2}
    with session_scope() as session:
        assert set(session.scalars(select(SalesforceOutbox.attempts))) == {0}
    salesforce.faults.clear()
    calls_before = len(salesforce.calls)
    assert flush_team(team_id).claimed == 0  # parked: not even a call
    assert len(salesforce.calls) == calls_before
    OrgBudget("default").unpark()
    make_due_now()
    assert flush_team(team_id).done == 2


def test_locked_rows_retry_and_the_rest_land(salesforce: FakeSalesforce, team_id: int) -> None:
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 4)
    salesforce.faults.add("unable_to_lock_row", count=1, match="composite", items=[1, 3], skip=1)
    stats = flush_team(team_id)
    assert (stats.done, stats.retried) == (2, 2)
    make_due_now()
    assert flush_team(team_id).done == 2
    assert len(salesforce.tasks()) == 4


def test_transient_errors_back_off(salesforce: FakeSalesforce, team_id: int) -> None:
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 2)
    salesforce.faults.add("http_503", count=1)
    flush_team(team_id)
    assert statuses() == {"pending": 2}
    with session_scope() as session:
        for row in session.scalars(select(SalesforceOutbox)):
            assert row.next_attempt_at > utcnow()
            assert "503" in (row.last_error or "")
    make_due_now()
    assert flush_team(team_id).done == 2


def test_rejected_rows_become_dead_letters_and_can_be_replayed(
    salesforce: FakeSalesforce, team_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 2)
    monkeypatch.setenv("SALESFORCE_TASK_STATUS", "Almost Done")  # not in the picklist
    get_settings.cache_clear()
    stats = flush_team(team_id)
    assert stats.failed == 2
    with session_scope() as session:
        errors = session.scalars(select(SalesforceOutbox.last_error)).all()
    assert all("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in (e or "") for e in errors)
    assert flush_team(team_id).claimed == 0  # dead letters wait for a person
    monkeypatch.setenv("SALESFORCE_TASK_STATUS", "Completed")
    get_settings.cache_clear()
    with session_scope() as session:
        assert replay_failed(session, team_id) == 2
    assert flush_team(team_id).done == 2


def test_deleted_contact_is_resolved_again(salesforce: FakeSalesforce, team_id: int) -> None:
    old = salesforce.add_contact("dana@acme.test")
    owe(team_id, 1)
    flush_team(team_id)
    salesforce.delete(old)
    new = salesforce.add_contact("dana@acme.test", last_name="Again")
    owe(team_id, 1, start=1)
    flush_team(team_id)  # the cached id is stale: Salesforce says so
    make_due_now()
    flush_team(team_id)
    assert statuses() == {"done": 2}
    assert [t["WhoId"] for t in salesforce.tasks()] == [old, new]


def test_expired_token_keeps_rows_pending(salesforce: FakeSalesforce, team_id: int) -> None:
    """With a fixed access token there is nothing to refresh: nothing is lost, it waits."""
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 1)
    salesforce.expire_token()
    stats = flush_team(team_id)
    assert stats.done == 0
    assert "cannot be renewed" in stats.errors[0]
    assert statuses() == {"pending": 1}
    with session_scope() as session:
        assert session.scalar(select(SalesforceOutbox.attempts)) == 0
    assert OrgBudget("default").parked() is not None
