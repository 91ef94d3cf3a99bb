"""The poll spares an IMAP or Exchange mailbox while the listener holds a prompt push.

At 10,000 listener mailboxes a poll a minute is another 167 syncs/s on top of the
pushes. Like a live Gmail watch, an IDLE or EWS stream the listener holds now
(its live mark in Redis) whose push was measured prompt is polled only every
SIGHTLINE_PUSH_POLL_SECONDS; without the mark, or unmeasured, or measured slow,
the minute's (or the slow push's) poll applies as before. IDLE holds INBOX only:
an IMAP mailbox that syncs other folders too keeps the minute's poll, which reads
them (a reply a rule filed in "Customers" raises no IDLE).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Mailbox, MailboxKind, Team, utcnow
from core.redis import get_redis
from worker.sync import push_latency, wanted
from worker.sync.polling import poll_mailboxes


def team() -> int:
    with session_scope() as session:
        made = Team(name="Poll")
        session.add(made)
        session.flush()
        return made.id


INBOX_ONLY = {"INBOX": {"uidvalidity": 7, "last_uid": 42, "synced_on": "2026-12-01"}}


def listed(*folders: str) -> dict[str, Any]:
    """An IMAP cursor as a sync leaves it, its list kept (worker.sync.imap)."""
    state = INBOX_ONLY["INBOX"]
    return {
        "shape": "folders",
        "folders": {f: state for f in [*folders, "Sent"]},
        "well_known": {"sentitems": "Sent"},  # read while an add-on's draft waited
        "listing": {"ids": list(folders), "skip": [], "at": utcnow().isoformat()},
    }


def mailbox(
    team_id: int,
    kind: str,
    *,
    prompt: bool | None,
    synced_ago: float,
    cursor: dict[str, Any] | None = None,
) -> int:
    with session_scope() as session:
        box = Mailbox(
            team_id=team_id,
            kind=kind,
            email=f"rep-{kind}-{prompt}-{synced_ago}-{len(str(cursor))}@seller.test",
            credentials_encrypted=encrypt_json({}),
            last_synced_at=utcnow() - timedelta(seconds=synced_ago),
            push_prompt=prompt,
            sync_cursor=cursor,
        )
        session.add(box)
        session.flush()
        return box.id


def polled() -> set[int]:
    poll_mailboxes()
    waiting = {int(m) for m in get_redis().smembers(wanted.WANTED_KEY)}
    get_redis().delete(wanted.WANTED_KEY, wanted.STREAM_KEY)
    return waiting


def test_a_held_prompt_push_is_polled_like_a_live_watch(env: Settings) -> None:
    minute_late = env.sync_poll_seconds + 5
    seller = team()
    imap = mailbox(seller, MailboxKind.IMAP, prompt=True, synced_ago=minute_late, cursor=INBOX_ONLY)
    kept = mailbox(
        seller, MailboxKind.IMAP, prompt=True, synced_ago=minute_late, cursor=listed("INBOX")
    )
    folders = mailbox(
        seller,
        MailboxKind.IMAP,
        prompt=True,
        synced_ago=minute_late,
        cursor=listed("INBOX", "Customers"),
    )
    never_synced = mailbox(seller, MailboxKind.IMAP, prompt=True, synced_ago=minute_late)
    exchange = mailbox(seller, MailboxKind.EXCHANGE, prompt=True, synced_ago=minute_late)
    unmeasured = mailbox(seller, MailboxKind.IMAP, prompt=None, synced_ago=minute_late)
    slow = mailbox(seller, MailboxKind.IMAP, prompt=False, synced_ago=minute_late)
    backstop = mailbox(
        seller, MailboxKind.IMAP, prompt=True, synced_ago=env.providers.push_poll_seconds + 5
    )
    everyone = {imap, kept, folders, never_synced, exchange, unmeasured, slow, backstop}
    assert polled() == everyone  # nothing held: the minute's poll for all

    for mailbox_id in everyone:
        push_latency.mark_live(mailbox_id)
    # Held and prompt: spared until SIGHTLINE_PUSH_POLL_SECONDS, which `backstop` passed;
    # not an IDLE on INBOX where other folders are synced too, nor one not known yet.
    assert polled() == {folders, never_synced, unmeasured, slow, backstop}

    push_latency.clear_live(imap)  # the listener lost its IDLE: polled again at once
    assert polled() == {imap, folders, never_synced, unmeasured, slow, backstop}
