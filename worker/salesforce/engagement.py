"""Engagement (opens, clicks, document views) summarised on the sent email's Task.

Salesforce timelines stay readable: an open is not a Task. Each sent email's
Task carries counters and first/last times in custom fields (shipped in
`salesforce/`), updated in batches a little after the engagement happened.

The one entry point for the tracking and document workers is
`queue_engagement`. It must be called in the same transaction as the event
it summarises, and only when that event is new (`record_event` returned an
id), so a counter moves exactly once per event::

    event_id = record_event(session, key=..., kind="open", ...)
    if event_id is not None and hit_class == "person":
        queue_engagement(session, sent_message_id=sent.id, kind="open", occurred_at=at)

It does two writes, both upserts keyed by the sent message:

- `salesforce_engagement`: the counter + 1, first/last times widened;
- `salesforce_outbox` row `task:engagement:<sent id>` (kind `task_engagement`):
  created pending, or re-opened if it was already written. Its due time is
  set only when it (re)opens, `debounce` seconds ahead, so a burst of opens
  becomes one update. The row carries no numbers: the flusher reads the
  summary when it writes, so a write is always the latest absolute values and
  re-sending it is harmless.

This module never calls Salesforce and never commits: the caller owns the
transaction. Writing the fields is `engagement_fields`, used by the outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config import get_settings
from core.events import natural_key
from core.models import (
    OutboxStatus,
    Prospect,
    SalesforceEngagement,
    SalesforceOutbox,
    SentMessage,
    utcnow,
)

TASK_ENGAGEMENT = "task_engagement"

# kind -> (counter column, first-time column, last-time column)
KINDS: dict[str, tuple[str, str, str]] = {
    "open": ("opens", "first_opened_at", "last_opened_at"),
    "click": ("clicks", "first_clicked_at", "last_clicked_at"),
    "document_view": ("document_views", "first_viewed_at", "last_viewed_at"),
}

# Our column -> the Task custom field (salesforce/README.md).
TASK_FIELDS: dict[str, str] = {
    "opens": "Sightline_Opens__c",
    "clicks": "Sightline_Clicks__c",
    "document_views": "Sightline_Document_Views__c",
    "first_opened_at": "Sightline_First_Opened__c",
    "last_opened_at": "Sightline_Last_Opened__c",
    "first_clicked_at": "Sightline_First_Clicked__c",
    "last_clicked_at": "Sightline_Last_Clicked__c",
    "first_viewed_at": "Sightline_First_Viewed__c",
    "last_viewed_at": "Sightline_Last_Viewed__c",
}


def sent_task_key(sent_message_id: int) -> str:
    """The outbox key of the Task logged for a sent email."""
    return natural_key("task", "sent", sent_message_id)


def engagement_key(sent_message_id: int) -> str:
    """The outbox key of the engagement update of a sent email's Task."""
    return natural_key("task", "engagement", sent_message_id)


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect}")  # pragma: no cover


def queue_engagement(
    session: Session, *, sent_message_id: int, kind: str, occurred_at: datetime
) -> bool:
    """Count one open, click or document view of a sent email, for its Salesforce Task.

    Call it in the transaction that recorded the event, once per new event, and
    only for engagement you count (a person, or a probable person behind a mail
    proxy): never for the sender's own devices, scanners or bots.

    Args:
        sent_message_id: the `SentMessage` the engagement is about.
        kind: "open", "click" or "document_view".
        occurred_at: when it happened (timezone-aware).

    Returns:
        True if the sent email has a Salesforce Task to update (the update is
        queued); False if it has none (no prospect, or sent before Salesforce
        logging): the summary is still counted.

    Raises:
        ValueError: an unknown kind, a naive time, or no such sent message.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at: must be timezone-aware")
    sent = session.execute(
        select(SentMessage.team_id, SentMessage.prospect_id).where(
            SentMessage.id == sent_message_id
        )
    ).first()
    if sent is None:
        raise ValueError(f"sent_message_id: no sent message {sent_message_id}")
    team_id = int(sent.team_id)
    now = utcnow()
    _count(session, team_id, sent_message_id, kind, occurred_at, now)

    task_owed = session.scalar(
        select(SalesforceOutbox.id).where(SalesforceOutbox.key == sent_task_key(sent_message_id))
    )
    if task_owed is None or sent.prospect_id is None:
        return False
    email = session.scalar(select(Prospect.email).where(Prospect.id == sent.prospect_id))
    if email is None:
        return False
    _owe_update(session, team_id, sent_message_id, email, now)
    return True


def _count(
    session: Session,
    team_id: int,
    sent_message_id: int,
    kind: str,
    occurred_at: datetime,
    now: datetime,
) -> None:
    counter, first, last = KINDS[kind]
    table = SalesforceEngagement.__table__
    values: dict[str, Any] = {
        "team_id": team_id,
        "sent_message_id": sent_message_id,
        "opens": 0,
        "clicks": 0,
        "document_views": 0,
        "updated_at": now,
    }
    values.update({counter: 1, first: occurred_at, last: occurred_at})
    stmt = _insert(session, table).values(**values)
    new = stmt.excluded
    old = table.c
    stmt = stmt.on_conflict_do_update(
        index_elements=["sent_message_id"],
        set_={
            counter: old[counter] + 1,
            first: case(
                (old[first].is_(None) | (new[first] < old[first]), new[first]),
                else_=old[first],
            ),
            last: case(
                (old[last].is_(None) | (new[last] > old[last]), new[last]),
                else_=old[last],
            ),
            "updated_at": new.updated_at,
        },
    )
    session.execute(stmt)


def _owe_update(
    session: Session, team_id: int, sent_message_id: int, email: str, now: datetime
) -> None:
    debounce = timedelta(seconds=get_settings().salesforce.engagement_debounce_seconds)
    table = SalesforceOutbox.__table__
    stmt = _insert(session, table).values(
        team_id=team_id,
        key=engagement_key(sent_message_id),
        kind=TASK_ENGAGEMENT,
        who_email=email.lower(),
        payload={"sent_message_id": sent_message_id},
        status=OutboxStatus.PENDING,
        attempts=0,
        next_attempt_at=now + debounce,
        created_at=now,
    )
    old = table.c
    written = old.status == OutboxStatus.DONE
    # A flusher may hold the row right now with older numbers: taking its claim
    # away makes its settle a no-op, so the row is written again.
    held = old.status == OutboxStatus.IN_FLIGHT
    reopen = written | held
    stmt = stmt.on_conflict_do_update(
        index_elements=["key"],
        set_={
            "status": case((reopen, OutboxStatus.PENDING.value), else_=old.status),
            "attempts": case((written, 0), else_=old.attempts),
            "next_attempt_at": case(
                (reopen, stmt.excluded.next_attempt_at), else_=old.next_attempt_at
            ),
            "claim_token": case((held, None), else_=old.claim_token),
        },
    )
    session.execute(stmt)


def engagement_fields(summary: SalesforceEngagement | None, usable: set[str]) -> dict[str, Any]:
    """The Task fields for a summary, limited to the fields the org has (`usable`)."""
    if summary is None:
        return {}
    fields: dict[str, Any] = {}
    for column, field_name in TASK_FIELDS.items():
        if field_name not in usable:
            continue
        value = getattr(summary, column)
        if isinstance(value, datetime):
            fields[field_name] = value.strftime("%Y-%m-%dT%H:%M:%S.") + (
                f"{value.microsecond // 1000:03d}Z"
            )
        elif value is not None:
            fields[field_name] = value
    return fields
