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
from core.models import Prospect, SalesforceOutbox, Team, utcnow
from core.redis import get_redis
from tests.fakes.salesforce import FakeSalesforce
from worker.salesforce.budget import OrgBudget
from worker.salesforce.connections import update_settings
from worker.salesforce.outbox import flush_team, teams_to_flush
from worker.salesforce.outbox_replay import replay_failed
from worker.salesforce.task_records import KEY_LINE, task_key


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


def test_an_outage_spends_no_attempt_and_its_back_off_grows_until_a_call_works(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 2)

    def after_a_failed_flush() -> tuple[set[int], list[float]]:
        flush_team(team_id)
        with session_scope() as session:
            rows = list(
                session.scalars(
                    select(SalesforceOutbox).where(SalesforceOutbox.status == "pending")
                )
            )
            attempts = {r.attempts for r in rows}
            waits = [(r.next_attempt_at - utcnow()).total_seconds() for r in rows]
        make_due_now()
        return attempts, waits

    # Ten outages in a row (more than the 8 attempts that make a dead letter):
    # no row spends an attempt, and each wait is about twice the one before.
    seen = []
    for _ in range(10):
        salesforce.faults.add("http_503", count=1)
        attempts, waits = after_a_failed_flush()
        assert attempts == {0} and statuses() == {"pending": 2}
        seen.append(min(waits))
    assert 10 < seen[0] < 20 and 20 < seen[1] < 40 and 45 < seen[2] < 75  # 15 s base, ±20 %
    assert 2880 < seen[-1] < 4320  # capped at an hour, ±20 %
    assert flush_team(team_id).done == 2
    # The call that worked ended the outage: the next one starts from the base again.
    owe(team_id, 1, email="dana@acme.test", start=2)
    salesforce.faults.add("http_503", count=1)
    _, waits = after_a_failed_flush()
    assert 10 < min(waits) < 20


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


def owe_many(team_id: int, emails: list[str], per_email: int = 1) -> None:
    with session_scope() as session:
        for n, email in enumerate(emails):
            for k in range(per_email):
                queue_salesforce_task(
                    session,
                    team_id=team_id,
                    key=f"task:reply:{n}:{k}",
                    kind="task_reply",
                    who_email=email,
                    event_id=None,
                    payload={"subject": f"Reply {n}.{k}", "description": "Thanks"},
                )


def test_a_thousand_tasks_for_new_people_cost_four_calls(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    """Lookups pack five queries a call, writes five collections of 200: 1,000 rows, 4 calls."""
    emails = [f"person.number.{n:04d}@a-rather-long-company-name.test" for n in range(500)]
    for n, email in enumerate(emails):
        if n % 2:
            salesforce.add_contact(email)
        else:
            salesforce.add_lead(email)
    owe_many(team_id, emails, per_email=2)
    used = salesforce.api_usage[0]
    stats = flush_team(team_id)
    assert stats.done == 1000
    # Describe Task; 500 long addresses make 3 Contact + 3 Lead queries of ≤ 12,000
    # characters, two read calls; one write call of five collections.
    assert salesforce.api_usage[0] - used == 4
    assert len(salesforce.tasks()) == 1000
    queries = [c for c in salesforce.calls if c.status == 414]
    assert queries == []  # every SOQL stayed under the URI limit
    for n, email in enumerate(emails[:10]):
        owe(team_id, 1, email=email, start=9000 + n)
    used = salesforce.api_usage[0]
    assert flush_team(team_id).done == 10
    assert salesforce.api_usage[0] - used == 1  # people known, schema known: one write


def test_a_validation_rule_makes_a_dead_letter_and_the_rest_lands(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    salesforce.configure(validation_rules=(("Task", "Subject", "hello 1"),))
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 3)
    stats = flush_team(team_id)
    assert (stats.done, stats.failed) == (2, 1)
    with session_scope() as session:
        failed = session.scalars(
            select(SalesforceOutbox).where(SalesforceOutbox.status == "failed")
        ).one()
    assert failed.key == "task:sent:1"
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in (failed.last_error or "")
    assert sorted(t["Subject"] for t in salesforce.tasks()) == ["Email: hello 0", "Email: hello 2"]


def test_long_text_is_cut_to_salesforce_lengths_before_sending(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    salesforce.add_contact("dana@acme.test")
    with session_scope() as session:
        queue_salesforce_task(
            session,
            team_id=team_id,
            key="task:reply:long",
            kind="task_reply",
            who_email="dana@acme.test",
            event_id=None,
            payload={"subject": "S" * 400, "description": "D" * 40_000},
        )
    assert flush_team(team_id).done == 1
    task = salesforce.tasks()[0]
    assert len(task["Subject"]) == 255
    assert len(task["Description"]) == 32_000
    assert task["Description"].endswith(KEY_LINE + task_key("task:reply:long"))


def test_unknown_people_wait_then_are_logged_when_they_appear(
    salesforce: FakeSalesforce, team_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    owe(team_id, 1, email="new@acme.test")
    flush_team(team_id)
    with session_scope() as session:
        row = session.scalars(select(SalesforceOutbox)).one()
    assert row.status == "waiting_who" and row.waiting_since is not None
    assert row.attempts == 0 and row.next_attempt_at > utcnow() + timedelta(minutes=50)
    contact = salesforce.add_contact("new@acme.test")
    get_redis().delete(*get_redis().keys("sightline:sf:who:*"))  # the miss has expired
    make_due_now()
    with caplog.at_level("INFO", logger="worker.salesforce.outbox_rows"):
        assert flush_team(team_id).done == 1
    assert [t["WhoId"] for t in salesforce.tasks()] == [contact]
    assert any("salesforce_who_appeared" in r.getMessage() for r in caplog.records)


def test_teams_that_opt_in_get_a_lead_for_unknown_people(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    with session_scope() as session:
        session.add(
            Prospect(team_id=team_id, email="fox@mulder.test", name="Fox Mulder", company="FBI")
        )
    update_settings(team_id, create_leads=True)
    owe(team_id, 2, email="fox@mulder.test")
    owe(team_id, 1, email="anon@x-files.test", start=10)
    stats = flush_team(team_id)
    assert (stats.done, stats.leads_created) == (3, 2)
    leads = {lead["Email"]: lead for lead in salesforce.records("Lead")}
    assert (leads["fox@mulder.test"]["FirstName"], leads["fox@mulder.test"]["LastName"]) == (
        "Fox",
        "Mulder",
    )
    assert leads["fox@mulder.test"]["Company"] == "FBI"
    assert (leads["anon@x-files.test"]["LastName"], leads["anon@x-files.test"]["Company"]) == (
        "anon",
        "x-files.test",
    )
    owe(team_id, 1, email="fox@mulder.test", start=20)
    assert flush_team(team_id).leads_created == 0  # known now: never a second Lead
    assert len(salesforce.records("Lead")) == 2
    assert {t["WhoId"] for t in salesforce.tasks()} == {lead["Id"] for lead in leads.values()}


@pytest.mark.parametrize("fault", ["http_502", "http_500", "http_503"])
def test_server_errors_back_off_with_jitter(
    salesforce: FakeSalesforce, team_id: int, fault: str
) -> None:
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 3)
    salesforce.faults.add(fault, count=1)
    flush_team(team_id)
    with session_scope() as session:
        waits = {
            (r.next_attempt_at - utcnow()).total_seconds()
            for r in session.scalars(select(SalesforceOutbox))
        }
    assert statuses() == {"pending": 3}
    assert all(10 < w < 20 for w in waits)  # 15 s base, ±20 %
    make_due_now()
    assert flush_team(team_id).done == 3


def test_a_large_backlog_goes_through_bulk_api_2(
    salesforce: FakeSalesforce, team_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_SALESFORCE_BULK_THRESHOLD", "300")
    get_settings.cache_clear()
    emails = [f"p{n}@acme.test" for n in range(150)]
    for email in emails:
        salesforce.add_contact(email)
    owe_many(team_id, emails, per_email=3)  # 450 Tasks
    stats = flush_team(team_id)
    assert (stats.done, stats.bulk_rows) == (450, 450)
    assert salesforce.call_count("jobs/ingest", method="POST") == 1
    assert keys_in_salesforce(salesforce) == Counter(
        task_key(f"task:reply:{n}:{k}") for n in range(150) for k in range(3)
    )
    assert {t["TaskSubtype"] for t in salesforce.tasks()} == {"Email"}


def test_replay_writes_a_dead_letter_once_its_cause_is_fixed(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    salesforce.configure(validation_rules=(("Task", "Subject", "hello"),))
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 1)
    assert flush_team(team_id).failed == 1
    salesforce.configure(validation_rules=())
    with session_scope() as session:
        assert replay_failed(session, team_id, [999]) == 0
        assert replay_failed(session, team_id + 1) == 0  # another team's list
    with session_scope() as session:
        assert replay_failed(session, team_id) == 1
    assert flush_team(team_id).done == 1
    assert len(salesforce.tasks()) == 1


def test_a_team_is_flushed_when_its_batch_is_full_or_has_waited(
    salesforce: FakeSalesforce, team_id: int
) -> None:
    owe(team_id, 3)
    now = utcnow()
    assert get_settings().salesforce.batch_seconds == 300  # ten 30-second cron ticks
    assert teams_to_flush(now) == []  # three rows can wait for company
    assert teams_to_flush(now + timedelta(seconds=301)) == [team_id]
    with session_scope() as session:
        busy = Team(name="Busy")
        session.add(busy)
        session.flush()
        busy_id = busy.id
    owe_many(busy_id, [f"p{n}@acme.test" for n in range(500)], per_email=2)
    assert teams_to_flush(utcnow()) == [busy_id]  # a full write call is ready now
