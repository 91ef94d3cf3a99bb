"""Draining the Salesforce outbox: one Task per row, exactly once.

A flush claims up to `CLAIM_BATCH` due rows of one team with a conditional
UPDATE (another flusher gets the rest), resolves each recipient to a Contact
(else an unconverted Lead) with batched SOQL, writes the Tasks through sObject
Collections and settles every row by its own result::

    pending ──claim──▶ in_flight ──success──────────────▶ done
       ▲                  │ ├──no Lead/Contact yet───────▶ waiting_who ──later──▶ (claimed again)
       │                  │ ├──transient (5xx, lock)─────▶ pending, backed off
       └──lease expired───┘ └──rejected item / too many──▶ failed (dead letter, replayable)

Exactly once: when the org has the external-id field (`Sightline_Key__c` by
default, see `salesforce/README.md`), Tasks are *upserted* by a key derived from
the row, so a write that reached Salesforce before a crash is matched, not
duplicated. Without it, rows that were in flight before (attempts > 1) are first
looked up by the key line written at the end of every Task's Description.

A 403 REQUEST_LIMIT_EXCEEDED parks the team's queue for `PARK_SECONDS`; the rows
go back to pending untouched, and sends and replies are never dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from config import get_settings, queues
from core.db import session_scope
from core.models import OutboxStatus, SalesforceOutbox, utcnow
from core.redis import get_redis
from worker.queueing import enqueue_once, job_started
from worker.salesforce.client import COLLECTION_LIMIT, SalesforceApi, SalesforceError

log = logging.getLogger(__name__)

CLAIM_BATCH = COLLECTION_LIMIT
PARK_SECONDS = 3600
MAX_ATTEMPTS = 8
MAX_ROUNDS = 25  # claims per flush job; a busy team yields to others, then continues
WHO_CACHE_SECONDS = 3600
NO_WHO_RETRY = timedelta(hours=1)
KEY_LINE = "Sightline-Key: "
# Per-item errors worth another try; anything else is a dead letter.
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
STALE_WHO_CODES = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})


@dataclass
class FlushStats:
    claimed: int = 0
    done: int = 0
    waiting_who: int = 0
    retried: int = 0
    failed: int = 0
    calls: int = 0
    errors: list[str] = field(default_factory=list)


def task_key(row_key: str) -> str:
    """The external id for a row: stable, short, and free of our internal ids' shape."""
    return "sl-" + hashlib.sha256(row_key.encode()).hexdigest()[:40]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parked_key(team_id: int) -> str:
    return f"sightline:sf:parked:{team_id}"


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(3600, 15 * 2 ** max(0, attempts - 1)))


def _lease() -> timedelta:
    """How long a claimed row is left alone before another flusher may take it."""
    return timedelta(seconds=get_settings().salesforce_lease_seconds)


def claim(
    session: Session, team_id: int, now: datetime, limit: int = CLAIM_BATCH
) -> list[SalesforceOutbox]:
    """Claim up to `limit` due rows of a team. The caller commits."""
    due = or_(
        and_(
            SalesforceOutbox.status.in_([OutboxStatus.PENDING, OutboxStatus.WAITING_WHO]),
            SalesforceOutbox.next_attempt_at <= now,
        ),
        and_(
            SalesforceOutbox.status == OutboxStatus.IN_FLIGHT,
            SalesforceOutbox.claimed_at < now - _lease(),
        ),
    )
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


class WhoResolver:
    """Email → Contact id, else unconverted Lead id, cached in Redis per team."""

    def __init__(self, api: SalesforceApi, team_id: int) -> None:
        self.api = api
        self.team_id = team_id
        self.redis = get_redis()

    def _cache_key(self, email: str) -> str:
        return f"sightline:sf:who:{self.team_id}:{email}"

    def resolve(self, emails: list[str]) -> dict[str, str | None]:
        wanted = sorted(set(emails))
        cached = self.redis.mget([self._cache_key(e) for e in wanted]) if wanted else []
        found: dict[str, str | None] = {}
        missing = []
        for email, value in zip(wanted, cached, strict=True):
            if value is None:
                missing.append(email)
            else:
                found[email] = _text(value) or None
        if missing:
            fresh = self._lookup(missing)
            with self.redis.pipeline() as pipe:
                for email in missing:
                    who = fresh.get(email)
                    found[email] = who
                    # A miss is cached briefly: the Lead may be created any minute.
                    pipe.set(
                        self._cache_key(email), who or "", ex=WHO_CACHE_SECONDS if who else 300
                    )
                pipe.execute()
        return found

    def forget(self, emails: list[str]) -> None:
        if emails:
            self.redis.delete(*[self._cache_key(e) for e in emails])

    def _lookup(self, emails: list[str]) -> dict[str, str]:
        who: dict[str, str] = {}
        for record in self.api.query_in(
            "SELECT Id, Email FROM Contact WHERE Email IN {} ORDER BY LastModifiedDate DESC",
            emails,
        ):
            who.setdefault(str(record["Email"]).lower(), str(record["Id"]))
        leads_wanted = [e for e in emails if e not in who]
        if leads_wanted:
            for record in self.api.query_in(
                "SELECT Id, Email FROM Lead WHERE Email IN {} AND IsConverted = false "
                "ORDER BY LastModifiedDate DESC",
                leads_wanted,
            ):
                who.setdefault(str(record["Email"]).lower(), str(record["Id"]))
        return who


def _task_record(row: SalesforceOutbox, who_id: str, status: str) -> dict[str, Any]:
    payload = row.payload
    description = str(payload.get("description") or "")
    key_line = f"\n\n{KEY_LINE}{task_key(row.key)}"
    description = description[: 32_000 - len(key_line)] + key_line
    return {
        "WhoId": who_id,
        "Subject": str(payload.get("subject") or "Email")[:255],
        "Description": description,
        "ActivityDate": payload.get("activity_date"),
        "Status": status,
        "TaskSubtype": "Email",
    }


def flush_team(team_id: int) -> FlushStats:
    """Write the team's due outbox rows to Salesforce. Safe to run concurrently."""
    stats = FlushStats()
    settings = get_settings().salesforce
    if not settings.configured:
        return stats
    redis = get_redis()
    if redis.exists(_parked_key(team_id)):
        return stats
    lock = redis.lock(
        f"sightline:sf:flush:{team_id}", timeout=get_settings().salesforce_lease_seconds
    )
    if not lock.acquire(blocking=False):
        return stats  # another flusher of this team is at work
    api = SalesforceApi(settings)
    try:
        for _ in range(MAX_ROUNDS):
            with session_scope() as session:
                rows = claim(session, team_id, utcnow())
            if not rows:
                break
            stats.claimed += len(rows)
            try:
                _write(api, team_id, rows, stats)
            except SalesforceError as exc:
                _release(rows, exc, stats)
                if exc.kind == "limit":
                    redis.set(_parked_key(team_id), 1, ex=PARK_SECONDS)
                    log.warning("salesforce_parked team_id=%s seconds=%s", team_id, PARK_SECONDS)
                break
    finally:
        stats.calls = api.calls
        lock.release()
    log.info(
        "salesforce_flush team_id=%s claimed=%s done=%s waiting_who=%s retried=%s "
        "failed=%s calls=%s",
        team_id,
        stats.claimed,
        stats.done,
        stats.waiting_who,
        stats.retried,
        stats.failed,
        stats.calls,
    )
    return stats


def _with_session_retry(api: SalesforceApi, call: Any, *args: Any) -> Any:
    """Run an API call; on an expired session, log in again and retry once."""
    try:
        return call(*args)
    except SalesforceError as exc:
        if exc.kind != "session" or not api.reauthenticate():
            raise
        return call(*args)


def _key_field(api: SalesforceApi, team_id: int) -> str | None:
    """The external-id field to upsert on, if the org has it (cached for an hour)."""
    redis = get_redis()
    cache = f"sightline:sf:keyfield:{team_id}"
    cached = redis.get(cache)
    if cached is not None:
        return _text(cached) or None
    wanted = api.settings.task_key_field
    fields = _with_session_retry(api, api.task_fields)
    info = fields.get(wanted)
    usable = bool(info and info.get("externalId") and info.get("createable"))
    redis.set(cache, wanted if usable else "", ex=3600)
    if not usable:
        log.warning(
            "salesforce_no_key_field team_id=%s field=%s fallback=description_key", team_id, wanted
        )
    return wanted if usable else None


def _write(
    api: SalesforceApi, team_id: int, rows: list[SalesforceOutbox], stats: FlushStats
) -> None:
    resolver = WhoResolver(api, team_id)
    who = _with_session_retry(api, resolver.resolve, [r.who_email for r in rows])
    ready = [r for r in rows if who.get(r.who_email)]
    unresolved = [r for r in rows if not who.get(r.who_email)]
    results: dict[int, tuple[str, str | None, str | None]] = {}
    for row in unresolved:
        results[row.id] = (OutboxStatus.WAITING_WHO, None, "no Contact or Lead with this email")

    key_field = _key_field(api, team_id) if ready else None
    # A row tried before may have reached Salesforce before we heard back: find
    # those first. (Upserting them again would be an *update*, and Salesforce
    # refuses TaskSubtype on update, so looking first is also what keeps every
    # Task an Email.)
    already = _already_written(api, [r for r in ready if r.attempts > 1], who, key_field)
    for row_id, sf_id in already.items():
        results[row_id] = (OutboxStatus.DONE, sf_id, None)
    fresh = [r for r in ready if r.id not in already]
    status = api.settings.task_status
    records = [_task_record(r, str(who[r.who_email]), status) for r in fresh]
    if not records:
        answers = []
    elif key_field is not None:
        for row, record in zip(fresh, records, strict=True):
            record[key_field] = task_key(row.key)
        answers = _with_session_retry(api, api.upsert, key_field, records)
    else:
        answers = _with_session_retry(api, api.create, records)
    to_settle = list(zip(fresh, answers, strict=True))

    stale: list[str] = []
    for row, answer in to_settle:
        if answer.get("success"):
            results[row.id] = (OutboxStatus.DONE, answer.get("id"), None)
            continue
        codes = [str(e.get("statusCode")) for e in answer.get("errors", [])]
        message = json.dumps(answer.get("errors", []))[:2000]
        if STALE_WHO_CODES.intersection(codes):
            stale.append(row.who_email)
            results[row.id] = (OutboxStatus.PENDING, None, message)
        elif TRANSIENT_ITEM_CODES.intersection(codes) and row.attempts < MAX_ATTEMPTS:
            results[row.id] = (OutboxStatus.PENDING, None, message)
        else:
            results[row.id] = (OutboxStatus.FAILED, None, message)
    resolver.forget(stale)
    _settle(rows, results, stats)


def _already_written(
    api: SalesforceApi,
    rows: list[SalesforceOutbox],
    who: dict[str, str | None],
    key_field: str | None,
) -> dict[int, str]:
    """Rows whose Task already exists in Salesforce (a write we never heard back from).

    Found by the external-id field when the org has it, else by the key line at
    the end of each Task's Description (Descriptions cannot be filtered in SOQL,
    so the candidates are the Tasks on those people created since the rows were).
    """
    if not rows:
        return {}
    by_key = {task_key(r.key): r.id for r in rows}
    found: dict[int, str] = {}
    if key_field is not None:
        template = f"SELECT Id, {key_field} FROM Task WHERE {key_field} IN {{}}"  # noqa: S608
        for record in _with_session_retry(api, api.query_in, template, sorted(by_key)):
            found[by_key[str(record[key_field])]] = str(record["Id"])
        return found
    since = min(r.created_at for r in rows) - timedelta(minutes=5)
    who_ids = sorted({str(who[r.who_email]) for r in rows})
    # Only our own timestamp is formatted in; the ids go through format_soql.
    created_after = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    template = (
        f"SELECT Id, Description FROM Task WHERE WhoId IN {{}} AND CreatedDate >= {created_after}"  # noqa: S608
    )
    for record in _with_session_retry(api, api.query_in, template, who_ids):
        description = str(record.get("Description") or "")
        marker = description.rpartition(KEY_LINE)[2].strip()
        if marker in by_key:
            found[by_key[marker]] = str(record["Id"])
    return found


def _settle(
    rows: list[SalesforceOutbox],
    results: dict[int, tuple[str, str | None, str | None]],
    stats: FlushStats,
) -> None:
    now = utcnow()
    with session_scope() as session:
        for row in rows:
            status, sf_id, error = results.get(
                row.id, (OutboxStatus.PENDING, None, "no result for this row")
            )
            values: dict[str, Any] = {"status": status, "last_error": error, "claim_token": None}
            if status == OutboxStatus.DONE:
                values.update(salesforce_id=sf_id, done_at=now)
                stats.done += 1
            elif status == OutboxStatus.WAITING_WHO:
                values["next_attempt_at"] = now + NO_WHO_RETRY
                stats.waiting_who += 1
            elif status == OutboxStatus.PENDING:
                values["next_attempt_at"] = now + _backoff(row.attempts)
                stats.retried += 1
            else:
                stats.failed += 1
                log.error(
                    "salesforce_dead_letter outbox_id=%s key=%s error=%s", row.id, row.key, error
                )
            # Only the claim that owns the row may settle it.
            session.execute(
                update(SalesforceOutbox)
                .where(
                    SalesforceOutbox.id == row.id, SalesforceOutbox.claim_token == row.claim_token
                )
                .values(**values)
            )


def _release(rows: list[SalesforceOutbox], exc: SalesforceError, stats: FlushStats) -> None:
    """A whole call failed: rows go back to pending (or to failed if rejected)."""
    stats.errors.append(str(exc))
    log.warning("salesforce_call_failed kind=%s error=%s rows=%s", exc.kind, exc, len(rows))
    status = OutboxStatus.FAILED if exc.permanent else OutboxStatus.PENDING
    results: dict[int, tuple[str, str | None, str | None]] = {
        r.id: (status, None, str(exc)) for r in rows
    }
    if exc.kind == "limit":
        # Not the rows' fault: no attempt is spent on them.
        with session_scope() as session:
            for row in rows:
                session.execute(
                    update(SalesforceOutbox)
                    .where(
                        SalesforceOutbox.id == row.id,
                        SalesforceOutbox.claim_token == row.claim_token,
                    )
                    .values(attempts=SalesforceOutbox.attempts - 1)
                )
    _settle(rows, results, stats)


def flush_all() -> int:
    """Cron: queue one flush per team that has due rows."""
    now = utcnow()
    with session_scope() as session:
        team_ids = session.scalars(
            select(SalesforceOutbox.team_id)
            .where(
                or_(
                    and_(
                        SalesforceOutbox.status.in_(
                            [OutboxStatus.PENDING, OutboxStatus.WAITING_WHO]
                        ),
                        SalesforceOutbox.next_attempt_at <= now,
                    ),
                    and_(
                        SalesforceOutbox.status == OutboxStatus.IN_FLIGHT,
                        SalesforceOutbox.claimed_at < now - _lease(),
                    ),
                )
            )
            .distinct()
        ).all()
    return sum(
        enqueue_once(
            f"sf-flush:{team_id}",
            queues.SALESFORCE,
            "worker.salesforce.outbox.flush_team_job",
            int(team_id),
            ttl=300,
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
    return int(result.rowcount)  # type: ignore[attr-defined]
