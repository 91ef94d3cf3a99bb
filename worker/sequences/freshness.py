"""Fresh before send: a follow-up step never goes out on stale knowledge of its mailbox.

The rule. A step after the first is claimed only when its mailbox is
*known fresh*: for IMAP, Graph and EWS its folder list was made after the step
fell due and every folder on it read since (`folders.listed_at`), and one of::

    synced:  a sync began after the step fell due, and within
             SIGHTLINE_FRESH_SECONDS (30 s)
    pushed:  its push is live and measured prompt (P = push_latency.PROMPT_SECONDS),
             a sync began after the push came up, none is running, the step has
             been due for P seconds, and no push from before due + P waits for
             its sync

      live:   Gmail watch / Graph subscription renewed, unexpired, no error
              (MailboxPush.renewed_at); IMAP IDLE held by the listener (for a
              mailbox that syncs INBOX alone: IDLE watches nothing else), an EWS
              stream while Exchange writes to it, keep-alives included
              (worker.sync.push_latency.live_since)
      prompt: worker.sync.push_latency's verdict from measured delays: a push is
              never assumed prompt, and a server whose IDLE polls never is

    not fresh ─▶ request_sync(mailbox)   (one waiting per mailbox: enqueue_once;
             │                         list_folders when the list is older than due)
             └─▶ the step is not claimed; it stays due, and a later sequence tick
                 (SIGHTLINE_SEQUENCE_TICK_SECONDS) finds the mailbox fresh

So a reply that arrived before the step fell due always halts it, whatever the
provider, however late its push and wherever a rule filed it: the sync that makes
the step sendable began after it; or a push measured to announce mail within P
seconds has had those seconds, and its sync has run; and no folder a rule made
before the step fell due was left unlisted. The list is why: syncs trust a list
for `folders.FOLDER_LIST_KEPT` (10 min), IDLE holds INBOX alone, an EWS stream
the folders of its start, so a reply filed in "Customers" made minutes ago
raised no push, and a sync with news elsewhere did not list. Gmail's history
covers every label, new ones too: it lists nothing. What is left is a reply in
the seconds between the step falling due and its claim; there the claim and the
reply's UPDATE meet on the enrolment row (worker.sequences.claiming). The first
step is not held: nothing can have answered it yet.

Why this is not a sync per send at 10,000 mailboxes. A Gmail mailbox whose push
is live and measured prompt is fresh at no cost; a listing one (a prompt IDLE,
Graph, EWS stream) costs one sync with a list per burst of due steps, after
which its push keeps the burst's later steps fresh however slowly they are sent.
Any other mailbox has at most one sync waiting (enqueue_once), and every step
of it that fell due before that sync began is released by it: steps fall due in
bursts (a rep's enrolments share their delays), so the extra syncs are about one
per mailbox per burst, never more than one per mailbox per sequence tick; and a
mailbox whose push was measured slow is polled every
SIGHTLINE_SLOW_PUSH_POLL_SECONDS anyway, the sync a step asks for only coming a
little before the poll's (the poll counts from the last sync). The check
itself is one indexed query and one Redis round trip per due step.

Must never: send, claim, or wait inline (a send worker is never held by a sync).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import select

from config import get_settings
from core.db import session_scope
from core.models import (
    Enrollment,
    Mailbox,
    MailboxKind,
    MailboxPush,
    MailboxStatus,
    Sequence,
    utcnow,
)
from core.redis import get_redis
from worker.sync import push_latency
from worker.sync.engine import LOCK_KEY, request_sync
from worker.sync.folders import LISTING_KINDS, listed_at
from worker.sync.imap_folders import idle_watches_every_folder

log = logging.getLogger(__name__)

# Kinds whose push the listener holds (IDLE, EWS streaming): live while it says so.
LISTENER_KINDS = frozenset({MailboxKind.IMAP, MailboxKind.EXCHANGE})


@dataclass(frozen=True)
class Knowledge:
    """What is known about a mailbox's freshness at one moment."""

    last_synced_at: datetime | None  # when the last successful sync began
    push_prompt: bool | None  # measured (worker.sync.push_latency); None: not yet
    live_since: datetime | None  # since when its push holds without a gap; None: not live
    pending_push: datetime | None  # the earliest push no sync has taken yet
    sync_running: bool
    lists_folders: bool = False  # IMAP, Graph, EWS: a folder made since the list is unread
    listed_at: datetime | None = None  # `folders.listed_at` of its cursor

    def list_older_than(self, due_at: datetime) -> bool:
        """A folder made before the step fell due may hold a reply no sync has read."""
        return self.lists_folders and (self.listed_at is None or self.listed_at < due_at)


def is_fresh(known: Knowledge, *, due_at: datetime, now: datetime, window_seconds: float) -> bool:
    """The rule itself (see the module docstring); no I/O."""
    if known.list_older_than(due_at):
        return False
    synced = known.last_synced_at
    since = max(now - timedelta(seconds=window_seconds), due_at)
    if synced is not None and synced >= since:
        return True  # a sync began after the step fell due
    if not known.push_prompt or known.live_since is None or known.sync_running:
        return False
    if synced is None or synced < known.live_since:
        return False  # mail from before the push came up was never pushed: sync it first
    prompt = timedelta(seconds=push_latency.PROMPT_SECONDS)
    if now < due_at + prompt:
        return False  # the push has not yet had its time to announce mail from before
    return known.pending_push is None or known.pending_push > due_at + prompt


def ready_to_send(enrollment_id: int, step: int) -> bool:
    """True when the enrolment's step may be claimed now; else a sync is asked for.

    Steps after the first wait for a fresh mailbox; when it is not fresh, its sync
    is queued (once) and False is returned: the caller leaves the step due.
    """
    if step == 0:
        return True
    now = utcnow()
    with session_scope() as session:
        row = session.execute(
            select(
                Mailbox.id,
                Mailbox.kind,
                Mailbox.status,
                Mailbox.last_synced_at,
                Mailbox.push_prompt,
                Mailbox.sync_cursor,
                Enrollment.next_step_at,
            )
            .join(Sequence, Sequence.mailbox_id == Mailbox.id)
            .join(Enrollment, Enrollment.sequence_id == Sequence.id)
            .where(Enrollment.id == enrollment_id)
        ).first()
        if row is None or row.next_step_at is None:
            return True  # nothing to claim: the claim says so
        renewed = None
        if row.push_prompt is True and row.kind not in LISTENER_KINDS:
            renewed = session.scalar(
                select(MailboxPush.renewed_at).where(
                    MailboxPush.mailbox_id == row.id,
                    MailboxPush.last_error.is_(None),
                    MailboxPush.expires_at > now,
                )
            )
    # IDLE holds INBOX only: with other folders synced, a reply filed there is not pushed.
    partial = row.kind == MailboxKind.IMAP and not idle_watches_every_folder(row.sync_cursor)
    prompt = False if partial else row.push_prompt
    known = replace(
        _knowledge(row.id, row.kind, row.last_synced_at, prompt, renewed),
        lists_folders=row.kind in LISTING_KINDS,
        listed_at=listed_at(row.sync_cursor) if row.kind in LISTING_KINDS else None,
    )
    window = get_settings().fresh_seconds
    if is_fresh(known, due_at=row.next_step_at, now=now, window_seconds=window):
        return True
    # A mailbox waiting for a person cannot be synced.
    if row.status in (MailboxStatus.ACTIVE, MailboxStatus.ERROR) and not known.sync_running:
        request_sync(row.id, list_folders=known.list_older_than(row.next_step_at))
    log.info(
        "step_waits_for_sync enrollment_id=%s step=%s mailbox_id=%s last_synced_at=%s "
        "due_at=%s push_prompt=%s live_since=%s pending_push=%s sync_running=%s "
        "listed_at=%s",
        enrollment_id,
        step,
        row.id,
        _iso(known.last_synced_at),
        _iso(row.next_step_at),
        known.push_prompt,
        _iso(known.live_since),
        _iso(known.pending_push),
        known.sync_running,
        _iso(known.listed_at),
    )
    return False


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _knowledge(
    mailbox_id: int,
    kind: str,
    last_synced_at: datetime | None,
    push_prompt: bool | None,
    push_renewed_at: datetime | None,
) -> Knowledge:
    """Add what Redis knows (pending push, running sync, held connection): one round trip."""
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.get(push_latency.PUSHED_KEY.format(mailbox_id=mailbox_id))
        pipe.exists(LOCK_KEY.format(mailbox_id=mailbox_id))
        pipe.get(push_latency.LIVE_KEY.format(mailbox_id=mailbox_id))
        pending, running, held = pipe.execute()
    live_since = push_latency.as_time(held) if kind in LISTENER_KINDS else push_renewed_at
    return Knowledge(
        last_synced_at=last_synced_at,
        push_prompt=push_prompt,
        live_since=live_since,
        pending_push=push_latency.as_time(pending),
        sync_running=bool(running),
    )
