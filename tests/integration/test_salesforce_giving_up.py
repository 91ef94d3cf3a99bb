"""When the outbox gives up on a row, and the key it writes Tasks under.

Found by mutation testing (`make mutation`): no test took a row to its last
attempt, so giving up one failure later (`>` for `>=`), without the dead
letter's status or without saying why all passed; and the Task key's format
could change freely, though Tasks written before an upgrade are found again
only by that exact key (and Orgs without the key field, by the Description's
key line).
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from core.db import session_scope
from core.models import SalesforceOutbox
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.test_salesforce_outbox import owe, salesforce, team_id
from worker.salesforce.outbox import flush_team
from worker.salesforce.outbox_rows import MAX_ATTEMPTS
from worker.salesforce.task_records import task_key

__all__ = ["salesforce", "team_id"]  # fixtures, shared with test_salesforce_outbox


@pytest.mark.parametrize(
    ("failures_before", "status"),
    [(MAX_ATTEMPTS - 2, "pending"), (MAX_ATTEMPTS - 1, "failed")],
    ids=["one-before-the-last", "the-last"],
)
def test_a_row_becomes_a_dead_letter_on_its_last_transient_failure_and_says_why(
    salesforce: FakeSalesforce, team_id: int, failures_before: int, status: str
) -> None:
    salesforce.add_contact("dana@acme.test")
    owe(team_id, 1)
    with session_scope() as session:
        session.execute(update(SalesforceOutbox).values(attempts=failures_before))
    # skip=1: the flush first reads (who is Dana, was this row written before?), then writes.
    salesforce.faults.add("unable_to_lock_row", count=1, match="composite", skip=1)

    flush_team(team_id)

    with session_scope() as session:
        row = session.scalars(select(SalesforceOutbox)).one()
        assert (row.status, row.attempts) == (status, failures_before + 1)
        assert row.last_error is not None and "UNABLE_TO_LOCK_ROW" in row.last_error
        if status == "failed":
            assert row.last_error.startswith(f"gave up after {MAX_ATTEMPTS} attempts: ")
    assert salesforce.tasks() == []


def test_task_keys_keep_the_format_earlier_versions_wrote() -> None:
    """sha256 of the row key, 40 hex digits, after "sl-": pinned, not recomputed."""
    assert task_key("task:sent:1") == "sl-eef904375e289511379d4509dd8d0a96433383f7"
