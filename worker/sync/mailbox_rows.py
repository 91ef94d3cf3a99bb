"""The mailbox row as a sync reads it first and writes it last: one statement each.

A push sync of one unrelated message costs a few milliseconds of CPU, and
building a SQLAlchemy statement (and its cache key) costs as much as running
it, so these statements are built once, with bound parameters, and run alone in
autocommit on a Core connection: `load` (the row, the team's oldest waiting add-on draft,
whether a quarantined message is due another try) and `set_status` (status,
reason, when it synced, the cursor, what the push latency learned).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update

from core.db import autocommit_connection
from core.models import Mailbox, MailboxStatus, utcnow
from worker.sync import quarantine as held
from worker.sync.sent_mail import oldest_waiting_draft

log = logging.getLogger("worker.sync.engine")

# fmt: off
_LOADED = (
    Mailbox.id, Mailbox.team_id, Mailbox.email, Mailbox.status, Mailbox.kind, Mailbox.sync_cursor,
    Mailbox.created_at, Mailbox.last_synced_at, Mailbox.push_delays,
    Mailbox.credentials_encrypted, Mailbox.skip_folders,
)
# fmt: on


_LOAD = select(
    *_LOADED,
    oldest_waiting_draft(Mailbox.team_id).label("draft_since"),
    held.any_due(Mailbox.id, bindparam("due_before")).label("retries_due"),
).where(Mailbox.id == bindparam("which"))


def load(mailbox_id: int) -> Any:
    """What a sync needs to begin, in one statement: the mailbox's row, when the team's
    oldest add-on draft waits (`draft_since`), and whether a quarantined message is due
    another try (`retries_due`). Most syncs find neither, and spend no more queries.
    Built once: building and keying a statement cost as much as running it."""
    params = {"which": mailbox_id, "due_before": held.due_stamp(utcnow())}
    with autocommit_connection() as connection:
        return connection.execute(_LOAD, params).one_or_none()


# Every sync ends in one of these writes: Core, not the ORM's bulk UPDATE (which
# plans a session sync it has nothing to sync); SET names the keys given.
_MAILBOXES = cast(Table, Mailbox.__table__)
_UPDATE = update(_MAILBOXES).where(_MAILBOXES.c.id == bindparam("which"))


def _update_mailbox(mailbox_id: int, values: dict[str, object]) -> None:
    with autocommit_connection() as connection:  # SET: the keys of `values`
        connection.execute(_UPDATE, {"which": mailbox_id, **values})


def save_cursor(mailbox_id: int, cursor: dict[str, object]) -> None:
    _update_mailbox(mailbox_id, {"sync_cursor": cursor})


def set_status(
    mailbox_id: int,
    status: MailboxStatus,
    reason: str | None,
    *,
    synced: datetime | None = None,
    cursor: dict[str, object] | None = None,
    also: dict[str, Any] | None = None,
) -> None:
    values: dict[str, object] = {"status": status, "status_reason": reason, **(also or {})}
    if synced is not None:  # when the sync began: mail that arrived before it was seen
        values["last_synced_at"] = synced
    if cursor is not None:
        values["sync_cursor"] = cursor
    _update_mailbox(mailbox_id, values)
    if status != MailboxStatus.ACTIVE:
        log.warning("mailbox_status mailbox_id=%s status=%s reason=%s", mailbox_id, status, reason)
