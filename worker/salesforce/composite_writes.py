"""One round of claimed rows written through the composite API, each settled by its result.

One round handles up to 1,000 rows in two or three API calls:

1. *reads*, one composite call: Contact/Lead lookups for addresses not in the
   cache, and, for rows tried before, the Tasks that already carry their key
   (`task_records.resolve_tasks`);
2. *Leads* for unknown addresses, one call, only when the team opted in;
3. *writes*, one composite call: up to five sObject Collections of 200 —
   new Tasks (upserted by `Sightline_Key__c`, engagement counters included
   when there are some already) and engagement updates of existing Tasks.

A collection that fails whole fails only its own rows; an item's error code
decides whether its row is retried, waits, or becomes a dead letter. An
engagement update whose email's Task is written in the same round rides on
that Task instead of costing its own record. The Account of each Contact found
is written to its prospects (`salesforce_account_id`: who their colleagues
are, for the company stop). This module never claims rows
and never decides budgets or parking: `outbox` does.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from core.db import session_scope
from core.models import OutboxStatus, Prospect, SalesforceEngagement, SalesforceOutbox
from core.zones.inference import ZoneGuess
from worker.salesforce.client import COLLECTION_LIMIT, CollectionOp, OpResult, SalesforceApi
from worker.salesforce.engagement import TASK_ENGAGEMENT, engagement_fields, sent_task_key
from worker.salesforce.outbox_rows import (
    STALE_WHO_CODES,
    TRANSIENT_ITEM_CODES,
    FlushStats,
    Outcome,
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
from worker.sequences.send_windows import learn_zone

ENGAGEMENT_WAIT = timedelta(minutes=10)  # an update waiting for its email's Task
# An engagement update whose Task is gone: a person deleted it; we do not re-create it.
TASK_GONE_CODES = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"})


def write_rows(
    api: SalesforceApi, profile: OrgProfile, rows: list[SalesforceOutbox], stats: FlushStats
) -> None:
    """One round: resolve, look up, write, settle. Whole-call failures raise SalesforceError."""
    tasks = [r for r in rows if r.kind != TASK_ENGAGEMENT]
    engagements = [r for r in rows if r.kind == TASK_ENGAGEMENT]
    schema = task_schema(api, profile.org_key)
    resolver = WhoResolver(profile.org_key)
    outcomes: dict[int, Outcome] = {}
    who, fresh = resolve_tasks(api, profile, resolver, schema, tasks, outcomes, stats)
    by_sent = summaries([sid for r in [*fresh, *engagements] if (sid := sent_id_of(r))])
    new_tasks = [(row, new_task(row, who, schema, by_sent)) for row in fresh]
    merged, updates = _engagement_updates(engagements, fresh, schema, by_sent, outcomes)

    ops = _chunks(_new_task_op(schema), new_tasks, "new")
    ops += _chunks(CollectionOp("PATCH", "composite/sobjects", []), updates, "update")
    results = api.write_many([op for op, _, _ in ops]) if ops else []
    stale: list[str] = []
    for (_, op_rows, what), result in zip(ops, results, strict=True):
        _settle_op(op_rows, result, what, who, schema, outcomes, stale)
    for engagement_id, task_row_id in merged.items():
        written = outcomes.get(task_row_id)
        if written is not None and written.status == OutboxStatus.DONE:
            outcomes[engagement_id] = Outcome(OutboxStatus.DONE, written.salesforce_id)
        else:
            outcomes[engagement_id] = Outcome(
                OutboxStatus.PENDING, error="its email's Task was not written", refund=True
            )
    resolver.forget(stale)
    settle(rows, outcomes, stats)
    remember_accounts(profile.team_id, resolver.accounts)
    remember_zones(profile.team_id, resolver.places)


def remember_accounts(team_id: int, accounts: dict[str, str]) -> None:
    """The Account of each prospect's Contact, learnt while resolving: their company."""
    if not accounts:
        return
    with session_scope() as session:
        for email, account in accounts.items():
            session.execute(
                update(Prospect)
                .where(Prospect.team_id == team_id, Prospect.email == email)
                .values(salesforce_account_id=account[:18])
            )


def remember_zones(team_id: int, places: dict[str, ZoneGuess]) -> None:
    """A prospect's zone from their Salesforce address or phone, unless a person set one."""
    if not places:
        return
    with session_scope() as session:
        emails = list(places)
        for prospect in session.scalars(
            select(Prospect).where(Prospect.team_id == team_id, Prospect.email.in_(emails))
        ):
            learn_zone(prospect, places[prospect.email])


def _engagement_updates(
    engagements: list[SalesforceOutbox],
    fresh: list[SalesforceOutbox],
    schema: TaskSchema,
    by_sent: dict[int, SalesforceEngagement],
    outcomes: dict[int, Outcome],
) -> tuple[dict[int, int], list[tuple[SalesforceOutbox, dict[str, Any]]]]:
    """(engagement row → send row written with its numbers this round, updates of written Tasks)."""
    fresh_by_sent = {sid: r for r in fresh if (sid := sent_id_of(r)) is not None}
    task_ids = _written_task_ids([sid for r in engagements if (sid := sent_id_of(r))])
    merged: dict[int, int] = {}
    updates: list[tuple[SalesforceOutbox, dict[str, Any]]] = []
    for row in engagements:
        sid = sent_id_of(row)
        if sid is not None and sid in fresh_by_sent:
            merged[row.id] = fresh_by_sent[sid].id
            continue
        task_id = task_ids.get(sid) if sid is not None else None
        if sid is None or task_id is None:
            outcomes[row.id] = Outcome(
                OutboxStatus.PENDING,
                error="waiting for the email's Task",
                retry_in=ENGAGEMENT_WAIT,
                refund=True,
            )
            continue
        values = engagement_fields(by_sent.get(sid), set(schema.engagement))
        if not values:
            outcomes[row.id] = Outcome(
                OutboxStatus.DONE, task_id, error="the org has no Sightline engagement fields"
            )
            continue
        updates.append((row, {"attributes": {"type": "Task"}, "Id": task_id, **values}))
    return merged, updates


def _new_task_op(schema: TaskSchema) -> CollectionOp:
    if schema.key_field is None:
        return CollectionOp("POST", "composite/sobjects", [])
    return CollectionOp("PATCH", f"composite/sobjects/Task/{schema.key_field}", [])


def _chunks(
    shape: CollectionOp, items: list[tuple[SalesforceOutbox, dict[str, Any]]], what: str
) -> list[tuple[CollectionOp, list[SalesforceOutbox], str]]:
    """`items` as ops of `shape`, 200 records each, with the rows behind each op."""
    ops = []
    for start in range(0, len(items), COLLECTION_LIMIT):
        chunk = items[start : start + COLLECTION_LIMIT]
        op = CollectionOp(shape.method, shape.path, [record for _, record in chunk])
        ops.append((op, [row for row, _ in chunk], what))
    return ops


def _written_task_ids(sent_ids: list[int]) -> dict[int, str]:
    """sent message id → its Task's Salesforce id, for the sends already written."""
    if not sent_ids:
        return {}
    keys = {sent_task_key(sid): sid for sid in set(sent_ids)}
    with session_scope() as session:
        found = session.execute(
            select(SalesforceOutbox.key, SalesforceOutbox.salesforce_id).where(
                SalesforceOutbox.key.in_(list(keys)),
                SalesforceOutbox.status == OutboxStatus.DONE,
                SalesforceOutbox.salesforce_id.is_not(None),
            )
        ).all()
    return {keys[key]: str(sf_id) for key, sf_id in found}


def _settle_op(
    rows: list[SalesforceOutbox],
    result: OpResult,
    what: str,
    who: dict[str, str | None],
    schema: TaskSchema,
    outcomes: dict[int, Outcome],
    stale: list[str],
) -> None:
    error = result.error
    if error is not None:
        # One collection failed whole (a bad field fails all its records); the
        # others in the call stand, so these rows settle on their own.
        for row in rows:
            outcomes[row.id] = (
                Outcome(OutboxStatus.FAILED, error=str(error))
                if error.permanent
                else retryable(row, str(error))
            )
        return
    for row, item in zip(rows, result.items, strict=True):
        who_id = who.get(row.who_email) if what == "new" else None
        if item.get("success"):
            outcomes[row.id] = Outcome(OutboxStatus.DONE, item.get("id"), who_id=who_id)
            continue
        errors = item.get("errors") or []
        codes = {str(e.get("statusCode")) for e in errors}
        message = json.dumps(errors)[:2000]
        if what == "update":
            if codes & TASK_GONE_CODES:
                outcomes[row.id] = Outcome(
                    OutboxStatus.DONE, error="the email's Task was deleted in Salesforce"
                )
            elif codes & TRANSIENT_ITEM_CODES:
                outcomes[row.id] = retryable(row, message)
            else:
                outcomes[row.id] = Outcome(OutboxStatus.FAILED, error=message)
            continue
        already_there = (
            schema.key_field is not None
            and "INVALID_FIELD_FOR_INSERT_UPDATE" in codes
            and any("TaskSubtype" in (e.get("fields") or []) for e in errors)
        )
        if codes & STALE_WHO_CODES:
            stale.append(row.who_email)
            outcomes[row.id] = retryable(row, message)
        elif already_there or codes & TRANSIENT_ITEM_CODES:
            # already_there: the upsert matched a Task we wrote and never heard of;
            # the next attempt finds it by key.
            outcomes[row.id] = retryable(row, message)
        else:
            outcomes[row.id] = Outcome(OutboxStatus.FAILED, error=message)
