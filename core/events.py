"""Recording events exactly once, under their natural key.

`record_event` is an INSERT ... ON CONFLICT DO NOTHING on `events.key`; it
returns the new row's id, or None when that event was already recorded — the
caller then knows not to apply its consequences (a state change, a Salesforce
Task) a second time. The same helper backs the Salesforce outbox.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from core.models import Event, SalesforceOutbox, utcnow

MAX_KEY_LENGTH = 255


def natural_key(kind: str, *parts: object) -> str:
    """`kind:part:part…`, hashed past the column's length so any input fits."""
    key = ":".join([kind, *(str(p) for p in parts)])
    if len(key) <= MAX_KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return f"{kind}:sha256:{digest}"


def insert_ignore(
    session: Session, table: Table, values: dict[str, Any], key: str | list[str]
) -> int | None:
    """Insert `values` unless a row with the same unique `key` column(s) exists.

    Returns the new row's id, or None when the row was already there.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:  # pragma: no cover - settings only accept these two
        raise RuntimeError(f"unsupported database dialect {dialect}")
    columns = [key] if isinstance(key, str) else key
    stmt = stmt.values(**values).on_conflict_do_nothing(index_elements=columns)
    stmt = stmt.returning(table.c.id)
    row = session.execute(stmt).first()
    return None if row is None else int(row[0])


def record_event(
    session: Session,
    *,
    team_id: int,
    key: str,
    kind: str,
    occurred_at: datetime | None = None,
    sent_message_id: int | None = None,
    enrollment_id: int | None = None,
    prospect_id: int | None = None,
    inbound_message_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> int | None:
    """Record an event once. Returns its id, or None if `key` was already recorded."""
    now = utcnow()
    return insert_ignore(
        session,
        Event.__table__,  # type: ignore[arg-type]
        {
            "team_id": team_id,
            "key": key,
            "kind": kind,
            "occurred_at": occurred_at or now,
            "sent_message_id": sent_message_id,
            "enrollment_id": enrollment_id,
            "prospect_id": prospect_id,
            "inbound_message_id": inbound_message_id,
            "data": data or {},
            "created_at": now,
        },
        "key",
    )


def queue_salesforce_task(
    session: Session,
    *,
    team_id: int,
    key: str,
    kind: str,
    who_email: str,
    payload: dict[str, Any],
    event_id: int | None,
) -> int | None:
    """Owe Salesforce one Task, once. Returns the outbox id, or None if already owed."""
    now = utcnow()
    return insert_ignore(
        session,
        SalesforceOutbox.__table__,  # type: ignore[arg-type]
        {
            "team_id": team_id,
            "key": key,
            "kind": kind,
            "who_email": who_email.lower(),
            "payload": payload,
            "event_id": event_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        },
        "key",
    )
