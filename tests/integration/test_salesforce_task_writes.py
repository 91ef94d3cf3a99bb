"""How new Tasks reach Salesforce: upserted by their key, never plain creates, where the org allows.

Exactly once rests on this (worker/salesforce/task_records.py): a Task written under
its key by upsert cannot be written twice, even by two flushers racing for a
row whose lease ran out. A plain create with the key in a field would land the
same in every test that only counts Tasks, so these read the wire: what each
call the fake org answered carried (`Call.operations`).

- The org has the key field: new Tasks go as `PATCH composite/sobjects/Task/<key
  field>` (sObject Collections upsert), or a Bulk API upsert job by that field.
- It has not (the package is not installed): they are created (`POST
  composite/sobjects`) with the key in the Description's last line, and a row
  tried before is first looked for by that line, so a write that landed
  unanswered is found, not created again.
"""

from __future__ import annotations

from collections import Counter

import pytest

from config import get_settings
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.test_salesforce_outbox import (
    keys_in_salesforce,
    make_due_now,
    owe,
    owe_many,
    salesforce,
    statuses,
    team_id,
    use_org,
)
from worker.salesforce.outbox import flush_team
from worker.salesforce.task_records import KEY_LINE, task_key

__all__ = ["salesforce", "team_id"]  # fixtures, shared with test_salesforce_outbox

KEY_FIELD = "Sightline_Key__c"
UPSERT = f"PATCH composite/sobjects/Task/{KEY_FIELD}"
CREATE = "POST composite/sobjects"


def writes(fake: FakeSalesforce) -> Counter[str]:
    """Every sObject Collections write and Bulk job the org was sent, by kind."""
    return Counter(
        operation
        for call in fake.calls
        for operation in call.operations
        if operation.startswith(("PATCH composite/sobjects", "POST composite/sobjects"))
        or " Task" in operation
    )


def test_new_tasks_are_upserted_by_their_key(salesforce: FakeSalesforce, team_id: int) -> None:
    salesforce.add_contact("dana@acme.test")
    keys = owe(team_id, 3)

    assert flush_team(team_id).done == 3

    assert writes(salesforce) == {UPSERT: 1}  # one collection of three, by key: no create
    assert {t[KEY_FIELD] for t in salesforce.tasks()} == {task_key(k) for k in keys}


def test_a_bulk_backlog_is_an_upsert_job_by_the_key(
    salesforce: FakeSalesforce, team_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_SALESFORCE_BULK_THRESHOLD", "201")  # the lowest allowed
    get_settings.cache_clear()
    emails = [f"p{n}@acme.test" for n in range(101)]
    for email in emails:
        salesforce.add_contact(email)
    owe_many(team_id, emails, per_email=2)

    assert flush_team(team_id).bulk_rows == 202

    assert writes(salesforce) == {f"upsert Task by {KEY_FIELD}": 1}
    assert len(salesforce.tasks()) == 202


def test_without_the_key_field_tasks_are_created_and_a_landed_write_is_found_not_repeated(
    salesforce: FakeSalesforce, team_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_org(salesforce, monkeypatch, ext_id_field=False)
    salesforce.add_contact("dana@acme.test")
    keys = owe(team_id, 3)
    # The write lands, its answer never comes (skip=1: the first call reads who Dana is).
    salesforce.faults.add("commit_then_drop", count=1, match="composite", skip=1)

    assert flush_team(team_id).done == 0
    assert writes(salesforce) == {CREATE: 1}
    make_due_now()
    salesforce.reset_calls()
    assert flush_team(team_id).done == 3

    reads = [op for call in salesforce.calls for op in call.operations if op.startswith("GET")]
    assert reads, "the rows tried before were looked for first"
    assert writes(salesforce) == {}  # found by their key line: nothing is created again
    assert statuses() == {"done": 3}
    assert keys_in_salesforce(salesforce) == Counter(task_key(k) for k in keys)
    tasks = sorted(salesforce.tasks(), key=lambda t: str(t["Subject"]))
    for task, key in zip(tasks, keys, strict=True):
        assert str(task["Description"]).endswith(KEY_LINE + task_key(key))
