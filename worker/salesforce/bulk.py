"""Backfills through Bulk API 2.0: a backlog of thousands of Tasks in a handful of calls.

When a team's due Tasks exceed SIGHTLINE_SALESFORCE_BULK_THRESHOLD (about
2,000: a team connecting its org after months of use, or an org parked all day
at its limit), a flush first claims up to `BULK_MAX_ROWS` of them, resolves
their recipients as usual (composite queries), and upserts them in one ingest
job by `Sightline_Key__c` through simple-salesforce: create job, upload CSV,
close, poll, read the successful and failed results: about six calls, whatever
the size. Results are settled like collection items; a row the job did not
report stays pending and is found by its key next time.

Only orgs with the key field are backfilled this way (an ingest job cannot be
made idempotent without it); others drain through composite writes, 1,000
Tasks a call. Engagement updates never go through bulk. This module decides
nothing about budgets or parking: `outbox` does.
"""

from __future__ import annotations

import logging
from typing import Any

from core.db import session_scope
from core.models import OutboxStatus, SalesforceOutbox, utcnow
from worker.salesforce.client import SalesforceApi, SalesforceError
from worker.salesforce.composite_writes import remember_zones
from worker.salesforce.outbox_rows import (
    STALE_WHO_CODES,
    TASK_KINDS,
    TRANSIENT_ITEM_CODES,
    FlushStats,
    Outcome,
    claim,
    release,
    retryable,
    sent_id_of,
    settle,
)
from worker.salesforce.profiles import OrgProfile
from worker.salesforce.resolver import WhoResolver
from worker.salesforce.task_records import (
    TaskSchema,
    new_task,
    resolve_tasks,
    summaries,
    task_schema,
)

log = logging.getLogger(__name__)

BULK_MAX_ROWS = 10_000


def backfill(api: SalesforceApi, profile: OrgProfile, stats: FlushStats) -> bool:
    """Write one bulk job of the team's due Tasks. True if there were rows to write."""
    schema = task_schema(api, profile.org_key)
    if schema.key_field is None:
        log.info("salesforce_bulk_skipped team_id=%s reason=no_key_field", profile.team_id)
        return False
    with session_scope() as session:
        rows = claim(session, profile.team_id, utcnow(), limit=BULK_MAX_ROWS, kinds=TASK_KINDS)
    if not rows:
        return False
    stats.claimed += len(rows)
    stats.bulk_rows += len(rows)
    try:
        outcomes = _write(api, profile, schema, rows, stats)
    except SalesforceError as exc:
        release(rows, exc, stats)
        raise
    settle(rows, outcomes, stats)
    return True


def _write(
    api: SalesforceApi,
    profile: OrgProfile,
    schema: TaskSchema,
    rows: list[SalesforceOutbox],
    stats: FlushStats,
) -> dict[int, Outcome]:
    assert schema.key_field is not None
    resolver = WhoResolver(profile.org_key)
    outcomes: dict[int, Outcome] = {}
    who, fresh = resolve_tasks(api, profile, resolver, schema, rows, outcomes, stats)
    if not fresh:
        return outcomes
    by_sent = summaries([sid for r in fresh if (sid := sent_id_of(r))])
    records = [new_task(row, who, schema, by_sent) for row in fresh]
    by_key = {str(r[schema.key_field]): row for r, row in zip(records, fresh, strict=True)}
    columns = sorted({name for r in records for name in r if name != "attributes"})
    flat = [{c: _cell(r.get(c)) for c in columns} for r in records]
    done, failed = api.bulk_upsert("Task", schema.key_field, flat)
    for result in done:
        row = by_key.get(result.get(schema.key_field, ""))
        if row is not None:
            outcomes[row.id] = Outcome(
                OutboxStatus.DONE, result.get("sf__Id") or None, who_id=who.get(row.who_email)
            )
    stale: list[str] = []
    for result in failed:
        row = by_key.get(result.get(schema.key_field, ""))
        if row is not None:
            outcomes[row.id] = _failed_outcome(row, result.get("sf__Error", ""), stale)
    resolver.forget(stale)
    remember_zones(profile.team_id, resolver.places)
    log.info(
        "salesforce_bulk team_id=%s rows=%s written=%s failed=%s",
        profile.team_id,
        len(records),
        len(done),
        len(failed),
    )
    return outcomes


def _cell(value: Any) -> str:
    """A CSV cell: an empty cell leaves a field alone in an ingest job."""
    return "" if value is None else str(value)


def _failed_outcome(row: SalesforceOutbox, error: str, stale: list[str]) -> Outcome:
    """`error` is the job's `CODE:message:fields --` text for the row."""
    code = error.split(":", 1)[0]
    message = error[:2000]
    if code in STALE_WHO_CODES:
        stale.append(row.who_email)
        return retryable(row, message)
    if code in TRANSIENT_ITEM_CODES or (
        code == "INVALID_FIELD_FOR_INSERT_UPDATE" and "TaskSubtype" in error
    ):
        return retryable(row, message)
    return Outcome(OutboxStatus.FAILED, error=message)
