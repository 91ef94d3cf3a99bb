"""The poll spares an IMAP or Exchange mailbox while the listener holds a prompt push.

At 10,000 listener mailboxes a poll a minute is another 167 syncs/s on top of the
pushes. Like a live Gmail watch, an IDLE or EWS stream the listener holds now
(its live mark in Redis) whose push was measured prompt is polled only every
SIGHTLINE_PUSH_POLL_SECONDS; without the mark, or unmeasured, or measured slow,
the minute's (or the slow push's) poll applies as before.
"""

from __future__ import annotations

from datetime import timedelta

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


def mailbox(team_id: int, kind: str, *, prompt: bool | None, synced_ago: float) -> int:
    with session_scope() as session:
        box = Mailbox(
            team_id=team_id,
            kind=kind,
            email=f"rep-{kind}-{prompt}-{synced_ago}@seller.test",
            credentials_encrypted=encrypt_json({}),
            last_synced_at=utcnow() - timedelta(seconds=synced_ago),
            push_prompt=prompt,
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
    imap = mailbox(seller, MailboxKind.IMAP, prompt=True, synced_ago=minute_late)
    exchange = mailbox(seller, MailboxKind.EXCHANGE, prompt=True, synced_ago=minute_late)
    unmeasured = mailbox(seller, MailboxKind.IMAP, prompt=None, synced_ago=minute_late)
    slow = mailbox(seller, MailboxKind.IMAP, prompt=False, synced_ago=minute_late)
    backstop = mailbox(
        seller, MailboxKind.IMAP, prompt=True, synced_ago=env.providers.push_poll_seconds + 5
    )
    everyone = {imap, exchange, unmeasured, slow, backstop}
    assert polled() == everyone  # nothing held: the minute's poll for all

    for mailbox_id in everyone:
        push_latency.mark_live(mailbox_id)
    # Held and prompt: spared until SIGHTLINE_PUSH_POLL_SECONDS, which `backstop` passed.
    assert polled() == {unmeasured, slow, backstop}

    push_latency.clear_live(imap)  # the listener lost its IDLE: polled again at once
    assert polled() == {imap, unmeasured, slow, backstop}
