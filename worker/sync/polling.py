"""The poll: the backstop that asks for a sync of every mailbox its push has not kept fresh.

Run by cron (`worker/cron.py`). It only asks (`worker.sync.wanted.want_many`,
one Redis round trip for all); the `sync` processes do the syncing.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from config import get_settings
from core.db import session_scope
from core.models import Mailbox, MailboxKind, MailboxPush, MailboxStatus, utcnow
from worker.sequences.freshness import LISTENER_KINDS
from worker.sync import push_latency, wanted
from worker.sync.imap_folders import idle_watches_every_folder


def poll_mailboxes() -> int:
    """Cron: queue a sync for every mailbox not synced within the poll interval.

    The push paths (IDLE, webhooks) keep most mailboxes fresh; this is the
    backstop. Mailboxes fall due at their own times (their last sync), so polls
    spread out instead of firing together. A mailbox whose push is live is polled
    only every SIGHTLINE_PUSH_POLL_SECONDS: at 10,000 mailboxes a minute's poll
    would cost as much as the pushes themselves. Live means a Gmail watch or
    Microsoft 365 subscription renewed, not expired, without error; or an IMAP
    IDLE or EWS stream the listener holds now (its mark in Redis,
    `push_latency.live_among`) whose push was measured prompt: the listener asks
    for a sync at every (re)connection, so what arrived while it was away is not
    left to the poll. IDLE holds INBOX only, so an IMAP mailbox that syncs other
    folders too is not spared (`imap_folders.idle_watches_every_folder`): a reply a
    rule filed in "Customers" is read by the minute's poll. A mailbox whose push
    was measured slow (an IDLE that only looks every minute:
    `worker.sync.push_latency`) is polled every SIGHTLINE_SLOW_PUSH_POLL_SECONDS
    instead.
    """
    settings = get_settings()
    now = utcnow()
    due_before = now - timedelta(seconds=settings.sync_poll_seconds)
    slow_due_before = now - timedelta(seconds=settings.slow_push_poll_seconds)
    push_due_before = now - timedelta(seconds=settings.providers.push_poll_seconds)
    live_push = (
        select(MailboxPush.id)
        .where(
            MailboxPush.mailbox_id == Mailbox.id,
            MailboxPush.last_error.is_(None),
            MailboxPush.expires_at > now,
        )
        .exists()
    )
    with session_scope() as session:
        due = session.execute(
            select(Mailbox.id, Mailbox.kind, Mailbox.push_prompt, Mailbox.last_synced_at).where(
                Mailbox.status.in_([MailboxStatus.ACTIVE, MailboxStatus.ERROR]),
                (Mailbox.last_synced_at.is_(None))
                | ((Mailbox.last_synced_at < due_before) & ~live_push)
                | (Mailbox.last_synced_at < push_due_before)
                | (Mailbox.push_prompt.is_(False) & (Mailbox.last_synced_at < slow_due_before)),
            )
        ).all()
    # Due only by the minute's rule, and a listener holds a prompt push: spared while held.
    held = [
        int(row.id)
        for row in due
        if row.kind in LISTENER_KINDS
        and row.push_prompt is True
        and row.last_synced_at is not None
        and row.last_synced_at >= push_due_before
    ]
    imap = {int(row.id) for row in due if row.kind == MailboxKind.IMAP}
    misses = _idle_misses_folders([m for m in held if m in imap])
    held = [m for m in held if m not in misses]
    spared = push_latency.live_among(held) if held else set()
    return wanted.want_many([int(row.id) for row in due if int(row.id) not in spared])


def _idle_misses_folders(imap: list[int]) -> set[int]:
    """Those of the IMAP mailboxes `imap` that sync folders besides INBOX, which IDLE
    does not watch: their other folders are read by the minute's poll."""
    misses: set[int] = set()
    for start in range(0, len(imap), 1000):
        with session_scope() as session:
            cursors = session.execute(
                select(Mailbox.id, Mailbox.sync_cursor).where(
                    Mailbox.id.in_(imap[start : start + 1000])
                )
            ).all()
        misses.update(int(m) for m, cursor in cursors if not idle_watches_every_folder(cursor))
    return misses
