"""The outbox's rows: which are due, claiming them, and settling each by its own result.

A row is a Task we owe (`task_sent`, `task_reply`) or an engagement update
(`task_engagement`). A flusher takes a team's due rows with a conditional
UPDATE (another flusher gets the rest) and settles each one::

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

A settle writes only rows whose claim is still ours (their `claim_token`), so a
flusher that outlived its lease cannot overwrite the one that took over. This
module never calls Salesforce: the writers (`composite_writes`, `bulk`) decide
each row's `Outcome`, this module stores it.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from config import get_settings
from core.db import session_scope
from core.models import OutboxStatus, SalesforceOutbox, utcnow
from core.redis import get_redis
from worker.salesforce.client import COLLECTION_LIMIT, COMPOSITE_HEAVY_LIMIT, SalesforceError
from worker.salesforce.engagement import TASK_ENGAGEMENT, engagement_key, sent_task_key

log = logging.getLogger(__name__)


CLAIM_BATCH = COMPOSITE_HEAVY_LIMIT * COLLECTION_LIMIT  # what one write call can carry
MAX_ATTEMPTS = 8  # per-row failures before a transient item error becomes a dead letter
TASK_KINDS = ("task_sent", "task_reply")
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
    """Exponential, capped (an hour by default), ±20 % jitter so retries do not arrive together."""
    settings = get_settings().salesforce
    # The exponent is bounded first: a row failing for weeks must not build a huge int.
    doubled = settings.retry_base_seconds * 2 ** min(max(0, attempts - 1), 32)
    seconds = float(min(settings.retry_max_seconds, doubled))
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))  # noqa: S311 - not a secret


def _lease() -> timedelta:
    """How long a claimed row is left alone before another flusher may take it."""
    return timedelta(seconds=get_settings().salesforce_lease_seconds)


def is_due(now: datetime) -> Any:
    """The SQL condition for a row to be taken: due, or claimed by a flusher whose lease ran out."""
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
    due = is_due(now)
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
                    is_due(now),
                )
            )
            or 0
        )


def retryable(row: SalesforceOutbox, message: str) -> Outcome:
    if row.attempts >= MAX_ATTEMPTS:
        return Outcome(
            OutboxStatus.FAILED, error=f"gave up after {row.attempts} attempts: {message}"
        )
    return Outcome(OutboxStatus.PENDING, error=message)


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


def outage_over(team_id: int) -> None:
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
