"""Draining the Salesforce outbox: every activity exactly once, in as few calls as it takes.

Rows are Tasks we owe (`task_sent`, `task_reply`: one Task each) and
engagement updates (`task_engagement`: the counters of a sent email's Task,
see `engagement`). A flush takes a team's due rows with a conditional UPDATE
(another flusher gets the rest) and settles each row by its own result::

    pending ──claim──▶ in_flight ──written, or found written before──────▶ done
       ▲                  │ ├──nobody with that email (even after Leads)─▶ waiting_who
       │                  │ │          (claimed again every SIGHTLINE_SALESFORCE_WHO_RETRY_SECONDS)
       │                  │ ├──transient item: lock, stale Who───────────▶ pending, back-off, jitter
       │                  │ ├──the whole call failed: 5xx, timeout───────▶ pending, no attempt
       │                  │ │      spent, back-off by the team's consecutive outages
       │                  │ ├──limit, or the org refused our login───────▶ pending, no attempt spent
       └──lease expired───┘ └──rejected item, or 8 transient failures────▶ failed: a dead letter,
                                                                             replayed by a person

Attempts count what went wrong with a row itself: an outage of Salesforce
(or of the network) is nobody's row's fault, so however long it lasts it
brings no row nearer the dead letters; its back-off grows with the number of
outages in a row, kept per team in Redis and cleared by a call that worked.

One round handles up to 1,000 rows in two or three API calls:

1. *reads*, one composite call: Contact/Lead lookups for addresses not in the
   cache, and, for rows tried before, the Tasks that already carry their key;
2. *Leads* for unknown addresses, one call, only when the team opted in;
3. *writes*, one composite call: up to five sObject Collections of 200 —
   new Tasks (upserted by `Sightline_Key__c`, engagement counters included
   when there are some already) and engagement updates of existing Tasks.

Exactly once: a Task is upserted by a key derived from its row, so a write
that reached Salesforce before a crash is matched, not duplicated. A row tried
before is first looked up by that key, because an upsert that matches becomes
an update and Salesforce refuses TaskSubtype on update. Orgs without the key
field get a key line at the end of each Task's Description and the lookup reads
those instead. Engagement updates carry absolute values, so repeating one is
harmless.

Budget: above the team's share of the org's daily allowance, engagement rows
are not claimed; sends and replies keep flowing. A 403 REQUEST_LIMIT_EXCEEDED
parks the org (no call at all) for SIGHTLINE_SALESFORCE_PARK_SECONDS. A backlog
above SIGHTLINE_SALESFORCE_BULK_THRESHOLD Tasks goes through Bulk API 2.0
(`bulk`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.exceptions import LockError
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from config import get_settings, queues
from core.db import session_scope
from core.models import OutboxStatus, Prospect, SalesforceEngagement, SalesforceOutbox, utcnow
from core.redis import get_redis
from worker.queueing import enqueue_once, job_started
from worker.salesforce.budget import OrgBudget
from worker.salesforce.client import (
    COLLECTION_LIMIT,
    COMPOSITE_HEAVY_LIMIT,
    CollectionOp,
    OpResult,
    SalesforceApi,
    SalesforceError,
    soql_in,
)
from worker.salesforce.connections import OrgProfile, load_profile, open_api
from worker.salesforce.engagement import (
    TASK_ENGAGEMENT,
    TASK_FIELDS,
    engagement_fields,
    engagement_key,
    sent_task_key,
)
from worker.salesforce.resolver import Prospective, WhoResolver

log = logging.getLogger(__name__)

CLAIM_BATCH = COMPOSITE_HEAVY_LIMIT * COLLECTION_LIMIT  # what one write call can carry
MAX_ROUNDS = 10  # rounds per flush job: a busy team yields to others, then continues
MAX_ATTEMPTS = 8  # per-row failures before a transient item error becomes a dead letter
SCHEMA_CACHE_SECONDS = 3600
ENGAGEMENT_WAIT = timedelta(minutes=10)  # an update waiting for its email's Task
USAGE_STALE_SECONDS = 600  # an "over the share" older than this is checked again
KEY_LINE = "Sightline-Key: "
TASK_KINDS = ("task_sent", "task_reply")
SUBJECT_LIMIT = 255
DESCRIPTION_LIMIT = 32_000
# Per-item errors worth another try.
TRANSIENT_ITEM_CODES = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "REQUEST_RUNNING_TOO_LONG",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "QUERY_TIMEOUT",
    }
)
# Per-item errors that mean our cached WhoId is stale.
STALE_WHO_CODES = frozenset(
    {"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "CANNOT_UPDATE_CONVERTED_LEAD"}
)
# An engagement update whose Task is gone: a person deleted it; we do not re-create it.
TASK_GONE_CODES = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY", "NOT_FOUND"})


@dataclass
class FlushStats:
    claimed: int = 0
    done: int = 0
    waiting_who: int = 0
    retried: int = 0
    failed: int = 0
    deferred: bool = False
    leads_created: int = 0
    bulk_rows: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """How a row settles after a round."""

    status: str
    salesforce_id: str | None = None
    error: str | None = None
    who_id: str | None = None
    retry_in: timedelta | None = None  # pending: when to try again (default: back-off)
    refund: bool = False  # pending: the attempt was not the row's fault


@dataclass(frozen=True)
class TaskSchema:
    """What the org's Task object has of ours."""

    key_field: str | None
    engagement: frozenset[str]


def task_key(row_key: str) -> str:
    """The external id for a row: stable, short, and free of our internal ids' shape."""
    return "sl-" + hashlib.sha256(row_key.encode()).hexdigest()[:40]


def sent_id_of(row: SalesforceOutbox) -> int | None:
    """The sent message a `task_sent` or `task_engagement` row is about."""
    if row.kind == TASK_ENGAGEMENT:
        value = row.payload.get("sent_message_id")
        return int(value) if value is not None else None
    if row.kind == "task_sent":
        tail = row.key.rpartition(":")[2]
        return int(tail) if tail.isdigit() and row.key == sent_task_key(int(tail)) else None
    return None


def _backoff(attempts: int) -> timedelta:
    """Exponential, capped at an hour, with ±20 % jitter so retries do not arrive together."""
    base = get_settings().salesforce.retry_base_seconds
    seconds = min(3600.0, base * 2 ** max(0, attempts - 1))
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))  # noqa: S311 - not a secret


def _lease() -> timedelta:
    """How long a claimed row is left alone before another flusher may take it."""
    return timedelta(seconds=get_settings().salesforce_lease_seconds)


def _due(now: datetime) -> Any:
    return or_(
        and_(
            SalesforceOutbox.status.in_([OutboxStatus.PENDING, OutboxStatus.WAITING_WHO]),
            SalesforceOutbox.next_attempt_at <= now,
        ),
        and_(
            SalesforceOutbox.status == OutboxStatus.IN_FLIGHT,
            SalesforceOutbox.claimed_at < now - _lease(),
        ),
    )


def claim(
    session: Session,
    team_id: int,
    now: datetime,
    limit: int = CLAIM_BATCH,
    kinds: Sequence[str] | None = None,
) -> list[SalesforceOutbox]:
    """Claim up to `limit` due rows of a team (of `kinds`, if given). The caller commits."""
    due = _due(now)
    if kinds is not None:
        due = and_(due, SalesforceOutbox.kind.in_(list(kinds)))
    candidates = (
        select(SalesforceOutbox.id)
        .where(SalesforceOutbox.team_id == team_id, due)
        .order_by(SalesforceOutbox.id)
        .limit(limit)
        .scalar_subquery()
    )
    token = uuid.uuid4().hex
    # `due` is repeated on the outer UPDATE: on PostgreSQL a concurrent flusher's
    # rows are re-checked after the lock wait, so each row is claimed once.
    session.execute(
        update(SalesforceOutbox)
        .where(SalesforceOutbox.id.in_(candidates), due)
        .values(
            status=OutboxStatus.IN_FLIGHT,
            claim_token=token,
            claimed_at=now,
            attempts=SalesforceOutbox.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    return list(
        session.scalars(
            select(SalesforceOutbox)
            .where(SalesforceOutbox.claim_token == token)
            .order_by(SalesforceOutbox.id)
        )
    )


def due_task_count(team_id: int, now: datetime) -> int:
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(SalesforceOutbox)
                .where(
                    SalesforceOutbox.team_id == team_id,
                    SalesforceOutbox.kind.in_(TASK_KINDS),
                    _due(now),
                )
            )
            or 0
        )


# -- the flush ------------------------------------------------------------------------


def flush_team(team_id: int) -> FlushStats:
    """Write the team's due outbox rows to Salesforce. Safe to run concurrently."""
    stats = FlushStats()
    profile = load_profile(team_id)
    if not profile.ready:
        return stats  # rows are held until the org is reachable
    budget = OrgBudget(profile.org_key)
    if budget.parked() is not None:
        return stats
    redis = get_redis()
    lock = redis.lock(
        f"sightline:sf:flush:{team_id}", timeout=get_settings().salesforce_lease_seconds
    )
    if not lock.acquire(blocking=False):
        return stats  # another flusher of this team is at work
    api = open_api(profile, budget)
    try:
        _flush_rounds(api, profile, budget, stats)
    finally:
        stats.calls = api.calls
        try:
            lock.release()
        except LockError:  # the lease ran out during a long round; rows are guarded by claim
            log.warning("salesforce_flush_lock_lost team_id=%s", team_id)
    log.info(
        "salesforce_flush team_id=%s org=%s claimed=%s done=%s waiting_who=%s retried=%s "
        "failed=%s deferred=%s leads_created=%s bulk_rows=%s calls=%s",
        team_id,
        profile.org_key,
        stats.claimed,
        stats.done,
        stats.waiting_who,
        stats.retried,
        stats.failed,
        stats.deferred,
        stats.leads_created,
        stats.bulk_rows,
        stats.calls,
    )
    return stats


def _flush_rounds(
    api: SalesforceApi, profile: OrgProfile, budget: OrgBudget, stats: FlushStats
) -> None:
    from worker.salesforce import bulk  # bulk imports this module

    settings = get_settings().salesforce
    bulk_first = due_task_count(profile.team_id, utcnow()) > settings.bulk_threshold
    for _ in range(MAX_ROUNDS):
        try:
            deferred = _engagement_deferred(api, profile, budget)
        except SalesforceError as exc:
            stats.errors.append(str(exc))
            return
        if deferred and not stats.deferred:
            usage = budget.usage()
            log.info(
                "salesforce_engagement_deferred team_id=%s org=%s used=%s max=%s share=%s",
                profile.team_id,
                profile.org_key,
                usage.used if usage else None,
                usage.max if usage else None,
                profile.budget_share,
            )
        stats.deferred = stats.deferred or deferred
        try:
            if bulk_first:
                bulk_first = False
                if bulk.backfill(api, profile, stats):
                    continue
            with session_scope() as session:
                rows = claim(
                    session, profile.team_id, utcnow(), kinds=TASK_KINDS if deferred else None
                )
            if not rows:
                return
            stats.claimed += len(rows)
            try:
                write_rows(api, profile, rows, stats)
            except SalesforceError as exc:
                release(rows, exc, stats)
                raise
            _outage_over(profile.team_id)
        except SalesforceError as exc:
            # A team's own org that refused us is marked needs_reconnect (not ready)
            # by `auth`; the shared default org has no such flag, so it is parked.
            if exc.kind == "limit" or (exc.kind == "auth" and profile.connection_id is None):
                seconds = settings.park_seconds
                budget.park(seconds, exc.kind)
                log.warning(
                    "salesforce_parked team_id=%s org=%s reason=%s seconds=%s",
                    profile.team_id,
                    profile.org_key,
                    exc.kind,
                    seconds,
                )
            return


def _engagement_deferred(api: SalesforceApi, profile: OrgProfile, budget: OrgBudget) -> bool:
    """Is the org above the team's share? A stale "yes" is checked with one cheap call,
    since only our own calls refresh it and deferred work makes none."""
    if not budget.over_share(profile.budget_share):
        return False
    usage = budget.usage()
    if usage is not None and time.time() - usage.at > USAGE_STALE_SECONDS:
        api.call("GET", "limits/")  # its Sforce-Limit-Info refreshes the budget
        return budget.over_share(profile.budget_share)
    return True


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


def retryable(row: SalesforceOutbox, message: str) -> Outcome:
    if row.attempts >= MAX_ATTEMPTS:
        return Outcome(
            OutboxStatus.FAILED, error=f"gave up after {row.attempts} attempts: {message}"
        )
    return Outcome(OutboxStatus.PENDING, error=message)


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


def settle(rows: list[SalesforceOutbox], outcomes: dict[int, Outcome], stats: FlushStats) -> None:
    """Write each row's outcome, if its claim is still ours."""
    now = utcnow()
    who_retry = timedelta(seconds=get_settings().salesforce.who_retry_seconds)
    with session_scope() as session:
        for row in rows:
            outcome = outcomes.get(row.id) or Outcome(
                OutboxStatus.PENDING, error="no result for this row", refund=True
            )
            values: dict[str, Any] = {
                "status": outcome.status,
                "last_error": outcome.error,
                "claim_token": None,
            }
            if outcome.status == OutboxStatus.DONE:
                values.update(salesforce_id=outcome.salesforce_id, done_at=now)
                if outcome.who_id:
                    values["who_id"] = outcome.who_id
                stats.done += 1
                if row.waiting_since is not None:
                    log.info(
                        "salesforce_who_appeared outbox_id=%s who_id=%s waited_seconds=%d",
                        row.id,
                        outcome.who_id,
                        (now - row.waiting_since).total_seconds(),
                    )
            elif outcome.status == OutboxStatus.WAITING_WHO:
                values["next_attempt_at"] = now + who_retry
                values["waiting_since"] = row.waiting_since or now
                values["attempts"] = SalesforceOutbox.attempts - 1  # nobody's fault
                stats.waiting_who += 1
            elif outcome.status == OutboxStatus.PENDING:
                values["next_attempt_at"] = now + (outcome.retry_in or _backoff(row.attempts))
                if outcome.refund:
                    values["attempts"] = SalesforceOutbox.attempts - 1
                stats.retried += 1
            else:
                stats.failed += 1
                log.error(
                    "salesforce_dead_letter outbox_id=%s key=%s error=%s",
                    row.id,
                    row.key,
                    outcome.error,
                )
            session.execute(
                update(SalesforceOutbox)
                .where(
                    SalesforceOutbox.id == row.id, SalesforceOutbox.claim_token == row.claim_token
                )
                .values(**values)
            )
        written = [
            engagement_key(sid)
            for row in rows
            if outcomes.get(row.id, Outcome("")).status == OutboxStatus.DONE
            and (sid := sent_id_of(row)) is not None
            and row.kind == "task_sent"
        ]
        if written:
            # Engagement that waited for these emails' Tasks can go now.
            session.execute(
                update(SalesforceOutbox)
                .where(
                    SalesforceOutbox.key.in_(written),
                    SalesforceOutbox.status == OutboxStatus.PENDING,
                    SalesforceOutbox.next_attempt_at > now,
                )
                .values(next_attempt_at=now)
            )


def _outages_key(team_id: int) -> str:
    return f"sightline:sf:outages:{team_id}"


def _count_outage(team_id: int) -> int:
    """One more whole-call failure in a row for this team; how many so far."""
    redis = get_redis()
    with redis.pipeline(transaction=True) as pipe:
        pipe.incr(_outages_key(team_id))
        pipe.expire(_outages_key(team_id), 6 * 3600)
        count, _ = pipe.execute()
    return int(count)


def _outage_over(team_id: int) -> None:
    get_redis().delete(_outages_key(team_id))


def release(rows: list[SalesforceOutbox], exc: SalesforceError, stats: FlushStats) -> None:
    """A whole call failed: the rows go back, or to the dead letters if Salesforce refused it."""
    stats.errors.append(str(exc))
    log.warning("salesforce_call_failed kind=%s error=%s rows=%s", exc.kind, exc, len(rows))
    park = timedelta(seconds=get_settings().salesforce.park_seconds)
    outage: timedelta | None = None
    if rows and exc.kind not in ("limit", "auth", "rejected"):
        outage = _backoff(_count_outage(rows[0].team_id))
    outcomes: dict[int, Outcome] = {}
    for row in rows:
        if exc.kind in ("limit", "auth"):
            # Not the rows' fault, and not theirs to fix: no attempt is spent.
            outcomes[row.id] = Outcome(
                OutboxStatus.PENDING, error=str(exc), retry_in=park, refund=True
            )
        elif exc.kind == "rejected":
            outcomes[row.id] = Outcome(OutboxStatus.FAILED, error=str(exc))
        else:
            # An outage is not the row's fault: back off by the team's outages, spend nothing.
            outcomes[row.id] = Outcome(
                OutboxStatus.PENDING, error=str(exc), retry_in=outage, refund=True
            )
    settle(rows, outcomes, stats)


# -- jobs -----------------------------------------------------------------------------


def teams_to_flush(now: datetime) -> list[int]:
    """Teams with a full batch due, or whose oldest due row has waited the batch window.

    Writing every cron tick would spend a call pair on a handful of rows; waiting
    up to SIGHTLINE_SALESFORCE_BATCH_SECONDS fills the calls instead.
    """
    window = timedelta(seconds=get_settings().salesforce.batch_seconds)
    with session_scope() as session:
        due = session.execute(
            select(
                SalesforceOutbox.team_id,
                func.count(),
                func.min(SalesforceOutbox.next_attempt_at),
            )
            .where(_due(now))
            .group_by(SalesforceOutbox.team_id)
        ).all()
    ready = []
    for team_id, count, oldest in due:
        oldest_at = oldest if isinstance(oldest, datetime) else None
        if oldest_at is not None and oldest_at.tzinfo is None:
            oldest_at = oldest_at.replace(tzinfo=UTC)  # SQLite's aggregate skips the column type
        if count >= CLAIM_BATCH or oldest_at is None or oldest_at <= now - window:
            ready.append(int(team_id))
    return ready


def flush_all() -> int:
    """Cron: queue one flush per team that is ready (see `teams_to_flush`)."""
    team_ids = teams_to_flush(utcnow())
    return sum(
        enqueue_once(
            f"sf-flush:{team_id}",
            queues.SALESFORCE,
            "worker.salesforce.outbox.flush_team_job",
            int(team_id),
            # Short: a job lost between dequeue and `job_started` (its worker killed
            # while forking) holds this marker until it expires. A duplicate flush
            # job is harmless: the team's lock turns it away.
            ttl=max(10, 2 * get_settings().salesforce_flush_seconds),
            retry=None,
        )
        for team_id in team_ids
    )


def flush_team_job(team_id: int) -> dict[str, object]:
    job_started(f"sf-flush:{team_id}")
    stats = flush_team(team_id)
    return {
        "claimed": stats.claimed,
        "done": stats.done,
        "failed": stats.failed,
        "calls": stats.calls,
    }


# -- dead letters -----------------------------------------------------------------------


def dead_letters(
    session: Session, team_id: int, *, after_id: int = 0, limit: int = 100
) -> list[SalesforceOutbox]:
    return list(
        session.scalars(
            select(SalesforceOutbox)
            .where(
                SalesforceOutbox.team_id == team_id,
                SalesforceOutbox.status == OutboxStatus.FAILED,
                SalesforceOutbox.id > after_id,
            )
            .order_by(SalesforceOutbox.id)
            .limit(limit)
        )
    )


def replay_failed(session: Session, team_id: int, outbox_ids: list[int] | None = None) -> int:
    """Put dead letters back in the queue (after a person fixed the cause)."""
    stmt = update(SalesforceOutbox).where(
        SalesforceOutbox.team_id == team_id, SalesforceOutbox.status == OutboxStatus.FAILED
    )
    if outbox_ids is not None:
        stmt = stmt.where(SalesforceOutbox.id.in_(outbox_ids))
    result = session.execute(
        stmt.values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=utcnow())
    )
    replayed = int(result.rowcount)  # type: ignore[attr-defined]
    if replayed:
        log.info("salesforce_replayed team_id=%s rows=%s", team_id, replayed)
    return replayed
