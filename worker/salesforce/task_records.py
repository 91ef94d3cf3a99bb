"""The Tasks we write: their record, their key, and finding the ones already written.

Exactly once: a Task is upserted by a key derived from its row, so a write
that reached Salesforce before a crash is matched, not duplicated. A row tried
before is first looked up by that key, because an upsert that matches becomes
an update and Salesforce refuses TaskSubtype on update. Orgs without the key
field get a key line at the end of each Task's Description and the lookup reads
those instead. Engagement updates carry absolute values, so repeating one is
harmless.

Both writers (`composite_writes`, `bulk`) build their records and read the
org's state here. This module reads from Salesforce (queries, describe, Leads
when the team opted in) but never writes a Task and never settles a row: it
only fills in the `Outcome` of rows it found already written or with nobody to
log against.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from config import get_settings
from core.db import session_scope
from core.models import OutboxStatus, Prospect, SalesforceEngagement, SalesforceOutbox
from core.redis import get_redis
from worker.salesforce.client import SalesforceApi, soql_in
from worker.salesforce.engagement import TASK_FIELDS, engagement_fields
from worker.salesforce.outbox_rows import FlushStats, Outcome, sent_id_of
from worker.salesforce.profiles import OrgProfile
from worker.salesforce.resolver import Prospective, WhoResolver
from worker.salesforce.task_limits import DESCRIPTION_LIMIT, SUBJECT_LIMIT

log = logging.getLogger(__name__)


SCHEMA_CACHE_SECONDS = 3600
KEY_LINE = "Sightline-Key: "


@dataclass(frozen=True)
class TaskSchema:
    """What the org's Task object has of ours."""

    key_field: str | None
    engagement: frozenset[str]


def task_key(row_key: str) -> str:
    """The external id for a row: stable, short, and free of our internal ids' shape."""
    return "sl-" + hashlib.sha256(row_key.encode()).hexdigest()[:40]


def task_schema(api: SalesforceApi, org_key: str) -> TaskSchema:
    """The key field and engagement fields the org's Task has (cached for an hour)."""
    redis = get_redis()
    cache = f"sightline:sf:schema:{org_key}"
    cached = redis.get(cache)
    if cached is not None:
        data = json.loads(cached)
        return TaskSchema(data["key"] or None, frozenset(data["engagement"]))
    wanted = get_settings().salesforce.task_key_field
    fields = api.describe("Task")
    info = fields.get(wanted)
    key_field = wanted if info and info.get("externalId") and info.get("createable") else None
    engagement = frozenset(
        name
        for name in TASK_FIELDS.values()
        if fields.get(name, {}).get("createable") and fields.get(name, {}).get("updateable")
    )
    redis.set(
        cache,
        json.dumps({"key": key_field or "", "engagement": sorted(engagement)}),
        ex=SCHEMA_CACHE_SECONDS,
    )
    if key_field is None:
        log.warning(
            "salesforce_no_key_field org=%s field=%s fallback=description_key", org_key, wanted
        )
    if len(engagement) < len(TASK_FIELDS):
        log.warning(
            "salesforce_engagement_fields_missing org=%s missing=%s",
            org_key,
            ",".join(sorted(set(TASK_FIELDS.values()) - engagement)),
        )
    return TaskSchema(key_field, engagement)


def task_record(row: SalesforceOutbox, who_id: str, status: str) -> dict[str, Any]:
    """A new Task, truncated to Salesforce's lengths so STRING_TOO_LONG cannot happen."""
    payload = row.payload
    description = str(payload.get("description") or "")
    key_line = f"\n\n{KEY_LINE}{task_key(row.key)}"
    description = description[: DESCRIPTION_LIMIT - len(key_line)] + key_line
    return {
        "attributes": {"type": "Task"},
        "WhoId": who_id,
        "Subject": str(payload.get("subject") or "Email")[:SUBJECT_LIMIT],
        "Description": description,
        "ActivityDate": payload.get("activity_date"),
        "Status": status,
        "TaskSubtype": "Email",
    }


def resolve_tasks(
    api: SalesforceApi,
    profile: OrgProfile,
    resolver: WhoResolver,
    schema: TaskSchema,
    tasks: list[SalesforceOutbox],
    outcomes: dict[int, Outcome],
    stats: FlushStats,
) -> tuple[dict[str, str | None], list[SalesforceOutbox]]:
    """(email → Who id, the rows to write). Settles in `outcomes` the rows already in
    Salesforce and those with nobody to log against (after creating Leads, if opted in)."""
    who, already = read_state(api, resolver, schema, tasks)
    unknown = [r for r in tasks if r.id not in already and not who.get(r.who_email)]
    if unknown and profile.create_leads:
        created = resolver.create_leads(api, prospectives(profile.team_id, unknown))
        who.update(created)
        stats.leads_created += len(created)
    fresh = []
    for row in tasks:
        if row.id in already:
            outcomes[row.id] = Outcome(
                OutboxStatus.DONE, already[row.id], who_id=who.get(row.who_email)
            )
        elif not who.get(row.who_email):
            outcomes[row.id] = Outcome(
                OutboxStatus.WAITING_WHO, error="no Contact or Lead with this email"
            )
        else:
            fresh.append(row)
    return who, fresh


def new_task(
    row: SalesforceOutbox,
    who: dict[str, str | None],
    schema: TaskSchema,
    by_sent: dict[int, SalesforceEngagement],
) -> dict[str, Any]:
    """The record for a new Task: its key, and the email's engagement so far."""
    record = task_record(row, str(who[row.who_email]), get_settings().salesforce.task_status)
    sid = sent_id_of(row)
    if sid is not None:
        record.update(engagement_fields(by_sent.get(sid), set(schema.engagement)))
    if schema.key_field is not None:
        record[schema.key_field] = task_key(row.key)
    return record


def read_state(
    api: SalesforceApi, resolver: WhoResolver, schema: TaskSchema, tasks: list[SalesforceOutbox]
) -> tuple[dict[str, str | None], dict[int, str]]:
    """(email → Who id, row id → Task id already in Salesforce), in as few calls as possible."""
    who, missing = resolver.cached([r.who_email for r in tasks])
    # Tried before: an attempt spent, or one refunded after a call that may have
    # reached Salesforce all the same (an outage leaves its error on the row).
    retried = [r for r in tasks if r.attempts > 1 or r.last_error is not None]
    who_queries = resolver.queries(missing)
    by_key = {task_key(r.key): r.id for r in retried}
    key_queries: list[str] = []
    if schema.key_field is not None and by_key:
        template = f"SELECT Id, {schema.key_field} FROM Task WHERE {schema.key_field} IN {{}}"  # noqa: S608
        key_queries = soql_in(template, sorted(by_key))
    answers = api.query_many(who_queries + key_queries) if who_queries or key_queries else []
    if missing:
        who.update(resolver.absorb(missing, answers[: len(who_queries)]))
    already: dict[int, str] = {}
    for page in answers[len(who_queries) :]:
        for record in page:
            row_id = by_key.get(str(record.get(schema.key_field or "")))
            if row_id is not None:
                already[row_id] = str(record["Id"])
    if schema.key_field is None and retried:
        already.update(_found_by_description(api, retried, who))
    return who, already


def _found_by_description(
    api: SalesforceApi, rows: list[SalesforceOutbox], who: dict[str, str | None]
) -> dict[int, str]:
    """Tasks written for `rows` before, found by the key line their Description ends with.

    Descriptions cannot be filtered in SOQL, so the candidates are the Tasks on
    those people created since the rows were.
    """
    by_key = {task_key(r.key): r.id for r in rows}
    who_ids = sorted({w for r in rows if (w := r.who_id or who.get(r.who_email))})
    if not who_ids:
        return {}
    since = min(r.created_at for r in rows) - timedelta(minutes=5)
    # Only our own timestamp is formatted in; the ids go through format_soql.
    created_after = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    template = (
        f"SELECT Id, Description FROM Task WHERE WhoId IN {{}} AND CreatedDate >= {created_after}"  # noqa: S608
    )
    found: dict[int, str] = {}
    for page in api.query_many(soql_in(template, who_ids)):
        for record in page:
            marker = str(record.get("Description") or "").rpartition(KEY_LINE)[2].strip()
            if marker in by_key:
                found[by_key[marker]] = str(record["Id"])
    return found


def prospectives(team_id: int, rows: list[SalesforceOutbox]) -> list[Prospective]:
    emails = sorted({r.who_email for r in rows})
    with session_scope() as session:
        known = {
            p.email: p
            for p in session.scalars(
                select(Prospect).where(Prospect.team_id == team_id, Prospect.email.in_(emails))
            )
        }
        return [
            Prospective(
                e,
                known[e].name if e in known else None,
                known[e].company if e in known else None,
            )
            for e in emails
        ]


def summaries(sent_ids: list[int]) -> dict[int, SalesforceEngagement]:
    if not sent_ids:
        return {}
    with session_scope() as session:
        rows = session.scalars(
            select(SalesforceEngagement).where(
                SalesforceEngagement.sent_message_id.in_(sorted(set(sent_ids)))
            )
        ).all()
        for row in rows:
            session.expunge(row)
    return {row.sent_message_id: row for row in rows}
