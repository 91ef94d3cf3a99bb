"""Dead letters: listing the rows Salesforce refused, and putting them back once fixed.

A row becomes a dead letter when Salesforce rejected it or it failed too often
(`outbox_rows`); nothing retries it on its own, because retrying cannot help
until a person fixes the cause (a validation rule, a missing field, a
permission). Replaying resets its attempts and makes it due now; the next
flush writes it like any other row, by its key, so a replay never duplicates a
Task. This module never calls Salesforce and never commits: the caller (the
admin API) owns the transaction.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.models import OutboxStatus, SalesforceOutbox, utcnow

log = logging.getLogger(__name__)


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
