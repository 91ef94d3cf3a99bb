"""Quarantined inbound messages: kept where a person sees them, and tried again.

What this module owns: the rows of ``inbound_messages`` with ``quarantined`` set,
for messages the sync could not read (classification over its time budget, an
error while handling one, a message the provider cannot hand over), and when
each is tried again. It never decides what a message is (``worker.matching``)
and never fetches (the sync does, ``worker.sync.engine``).

One row per message (``mailbox_id``, ``provider_id``), its ``error`` the latest
reason in words a person can read, its retry plan in ``details["retry"]``::

    {"attempts": 2, "next_at": "2026-12-06T12:25:00", "fetch_ref": "…"}

    sync ── over budget / error ──▶ quarantined, attempt 1, next try in 5 min
     ▲                                              │
     └── the mailbox's next sync after next_at ◀────┘
             tried with the budget doubled per attempt so far (``retry_budget``);
             read now: the row becomes what the message is (inbound._insert_inbound)
             or goes (it answers nothing of ours);
             again: attempt n+1, next try in 5·4^(n-1) min;
             after MAX_ATTEMPTS: stays quarantined (next_at null), visible, not retried.

The budget of a retry follows the current setting (SIGHTLINE_CLASSIFY_BUDGET_MS),
so raising it helps the messages already waiting.

A row without a retry plan (the provider said it cannot hand the message over)
is kept and shown, never retried. Times are naive UTC, written ISO-8601 so that
the JSON value compares in SQL as it does in time (SQLite and PostgreSQL alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Exists, delete, exists, func, select
from sqlalchemy.orm import Session

from core.events import insert_ignore
from core.models import InboundMessage
from worker.sync.base import HeaderSummary

MAX_ATTEMPTS = 5
"""Tries in all, the first included; after the last the message stays quarantined."""
RETRY_BASE_SECONDS = 300
RETRY_FACTOR = 4
RETRIES_PER_SYNC = 3
"""Quarantined messages tried again per sync: each may take its whole budget."""
MAX_RETRY_BUDGET_SECONDS = 16.0
"""A message that needs more than this to be read (on capped input) is hostile."""
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class DueRetry:
    """A quarantined message due to be tried again."""

    id: int
    provider_id: str
    rfc_message_id: str | None
    fetch_ref: str
    received_at: datetime | None
    attempts: int  # tries so far


def retry_budget(budget: float, attempts: int) -> float:
    """The classification budget of the try after ``attempts`` tries: doubled per try."""
    return float(min(budget * 2**attempts, max(budget, MAX_RETRY_BUDGET_SECONDS)))


def keep(
    session: Session,
    *,
    team_id: int,
    mailbox_id: int,
    summary: HeaderSummary,
    kind: str,
    reason: str,
    retry: bool,
    now: datetime,
) -> None:
    """Quarantine the message ``summary`` names, or count one more attempt at it.

    ``retry``: try it again later (with back-off); False keeps it without. A
    row the message was already read into (not quarantined) is left as it is.
    """
    values: dict[str, Any] = {
        "team_id": team_id,
        "mailbox_id": mailbox_id,
        "provider_id": summary.provider_id,
        "rfc_message_id": summary.rfc_message_id,
        "kind": kind,
        "from_addr": summary.from_addr,
        "subject": (summary.subject or "")[:998],
        "quarantined": True,
        "error": reason[:4000],
        "received_at": summary.received_at,
        "created_at": now,
        "details": _details(1, retry, summary.fetch_ref, now),
    }
    inserted = insert_ignore(
        session,
        InboundMessage.__table__,  # type: ignore[arg-type]
        values,
        ["mailbox_id", "provider_id"],
    )
    if inserted is not None:
        return
    row = session.scalars(
        select(InboundMessage).where(
            InboundMessage.mailbox_id == mailbox_id,
            InboundMessage.provider_id == summary.provider_id,
        )
    ).one()
    if not row.quarantined:
        return
    attempts = int(_retry(row).get("attempts") or 0) + 1
    row.kind = kind
    row.error = reason[:4000]
    row.details = _details(attempts, retry, summary.fetch_ref or _retry(row).get("fetch_ref"), now)


def _due(mailbox_id: Any, before: Any) -> list[ColumnElement[bool]]:
    next_at = InboundMessage.details["retry"]["next_at"].as_string()
    return [
        InboundMessage.mailbox_id == mailbox_id,
        InboundMessage.quarantined.is_(True),
        next_at <= before,
    ]


def due_stamp(now: datetime) -> str:
    """`now` as a quarantined message's next try is written: compared as text."""
    return now.strftime(_TIME_FORMAT)


def any_due(mailbox_id: Any, before: Any) -> Exists:
    """EXISTS: a quarantined message of the mailbox is due another try by `before`
    (a `due_stamp`, or a bound parameter that will hold one).

    `mailbox_id` may be a column: the sync reads this with the mailbox's own row,
    so the usual sync (nothing quarantined) spends no statement on retries.
    """
    return exists().where(*_due(mailbox_id, before))


def due_retries(session: Session, mailbox_id: int, now: datetime) -> list[DueRetry]:
    """The mailbox's quarantined messages whose next try is due, oldest first."""
    rows = session.scalars(
        select(InboundMessage)
        .where(*_due(mailbox_id, due_stamp(now)))
        .order_by(InboundMessage.id)
        .limit(RETRIES_PER_SYNC)
    ).all()
    due: list[DueRetry] = []
    for row in rows:
        retry = _retry(row)
        if not retry.get("fetch_ref"):
            continue
        due.append(
            DueRetry(
                id=row.id,
                provider_id=row.provider_id,
                rfc_message_id=row.rfc_message_id,
                fetch_ref=str(retry["fetch_ref"]),
                received_at=row.received_at,
                attempts=int(retry.get("attempts") or 1),
            )
        )
    return due


def release(session: Session, row_id: int) -> None:
    """Drop a quarantined row whose message, read at last, answers nothing of ours."""
    session.execute(
        delete(InboundMessage).where(InboundMessage.id == row_id, InboundMessage.quarantined)
    )


def counts(session: Session, mailbox_ids: list[int]) -> dict[int, int]:
    """How many quarantined messages each of these mailboxes keeps (0s left out)."""
    if not mailbox_ids:
        return {}
    rows = session.execute(
        select(InboundMessage.mailbox_id, func.count())
        .where(InboundMessage.mailbox_id.in_(mailbox_ids), InboundMessage.quarantined.is_(True))
        .group_by(InboundMessage.mailbox_id)
    )
    return {int(mailbox_id): int(n) for mailbox_id, n in rows}


def newest(session: Session, mailbox_id: int, limit: int) -> list[InboundMessage]:
    """The mailbox's quarantined messages, newest first, at most ``limit``."""
    return list(
        session.scalars(
            select(InboundMessage)
            .where(InboundMessage.mailbox_id == mailbox_id, InboundMessage.quarantined.is_(True))
            .order_by(InboundMessage.created_at.desc(), InboundMessage.id.desc())
            .limit(limit)
        )
    )


def tries(details: dict[str, Any] | None) -> int:
    """How many times the message was tried (1 for one kept without retries)."""
    retry = (details or {}).get("retry")
    return int(retry.get("attempts") or 1) if isinstance(retry, dict) else 1


def next_try_at(details: dict[str, Any] | None) -> datetime | None:
    """When the message is tried again (UTC), or None: never again."""
    retry = (details or {}).get("retry")
    if not isinstance(retry, dict) or not retry.get("next_at"):
        return None
    return datetime.strptime(str(retry["next_at"]), _TIME_FORMAT).replace(tzinfo=UTC)


def describe(error: str | None, details: dict[str, Any] | None) -> str:
    """What a person reads about a quarantined message: why, and what happens next."""
    reason = error or "could not be read"
    retry = (details or {}).get("retry")
    if not isinstance(retry, dict):
        return f"{reason}; kept, not retried"
    attempts = int(retry.get("attempts") or 1)
    tries = "1 try" if attempts == 1 else f"{attempts} tries"
    if retry.get("next_at"):
        return f"{reason}; {tries} so far, next after {str(retry['next_at']).replace('T', ' ')} UTC"
    return f"{reason}; gave up after {tries}"


def _details(attempts: int, retry: bool, fetch_ref: object, now: datetime) -> dict[str, Any]:
    if not retry or not fetch_ref:
        return {}
    plan: dict[str, Any] = {"attempts": attempts, "fetch_ref": str(fetch_ref), "next_at": None}
    if attempts < MAX_ATTEMPTS:
        wait = timedelta(seconds=RETRY_BASE_SECONDS * RETRY_FACTOR ** (attempts - 1))
        plan["next_at"] = (now + wait).strftime(_TIME_FORMAT)
    return {"retry": plan}


def _retry(row: InboundMessage) -> dict[str, Any]:
    retry = (row.details or {}).get("retry")
    return retry if isinstance(retry, dict) else {}
