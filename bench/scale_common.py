"""What every scale mode's setup shares: addresses, teams, mailbox rows in bulk, sent steps.

Each mode (`bench.scale_modes`: Gmail, Graph, IMAP, EWS) connects its mailboxes
its own way (credentials, cursor, push), but the rows and the replies' targets
have one shape whatever the provider, so the bench's figures compare:

    addresses(n, teams)            rep00000@team000.test …; mailbox n is in team n % teams
    create_teams(session, teams)   the teams' ids, in that order
    insert_mailboxes(...)          one bulk INSERT: encrypted credentials, a cursor, synced now
    insert_pushes(...)             one bulk INSERT of live mailbox_push rows (webhook modes)
    sequences_with_step_one_sent   per team a sequence on its first mailbox, `per_team`
                                   prospects with step 1 sent -> the targets replies answer:
                                   (enrollment id, reply-to mailbox address, Message-ID we sent)
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any


def addresses(mailboxes: int, teams: int) -> list[str]:
    """The mailboxes' addresses; mailbox n belongs to team n % teams."""
    return [f"rep{n:05d}@team{n % teams:03d}.test" for n in range(mailboxes)]


def create_teams(session: Any, teams: int) -> list[int]:
    """`teams` teams; their ids in order (mailbox n belongs to team_ids[n % teams])."""
    from core.models import Team

    team_ids = []
    for t in range(teams):
        team = Team(name=f"Scale {t:03d}")
        session.add(team)
        session.flush()
        team_ids.append(team.id)
    return team_ids


def insert_mailboxes(
    session: Any,
    kind: str,
    team_ids: list[int],
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]],
    now: datetime,
) -> dict[str, int]:
    """(address, credentials, cursor) rows as connected mailboxes synced at `now`, in one INSERT.

    Returns mailbox id by address, in the rows' order.
    """
    from sqlalchemy import insert, select

    from core.crypto import encrypt_json
    from core.models import Mailbox

    session.execute(
        insert(Mailbox),
        [
            {
                "team_id": team_ids[n % len(team_ids)],
                "kind": kind,
                "email": address,
                "credentials_encrypted": encrypt_json(creds),
                "sync_cursor": cursor,
                "status": "active",
                "last_synced_at": now,
                "created_at": now - timedelta(days=1),
            }
            for n, (address, creds, cursor) in enumerate(rows)
        ],
    )
    found = dict(
        session.execute(select(Mailbox.email, Mailbox.id).where(Mailbox.kind == kind)).all()
    )
    return {address: int(found[address]) for address, _, _ in rows}


def insert_pushes(session: Any, kind: str, external_ids: dict[int, str], expires: datetime) -> None:
    """A live push row (renewed now, no error) per mailbox id, its provider's id for it."""
    from sqlalchemy import insert

    from core.models import MailboxPush, utcnow

    now = utcnow()
    session.execute(
        insert(MailboxPush),
        [
            {
                "mailbox_id": mailbox_id,
                "kind": kind,
                "external_id": external_id,
                "expires_at": expires,
                "renewed_at": now,
                "created_at": now,
            }
            for mailbox_id, external_id in external_ids.items()
        ],
    )


def sequences_with_step_one_sent(
    session: Any, ids: dict[str, int], team_ids: list[int], per_team: int
) -> list[tuple[int, str, str]]:
    """Per team a sequence on its first mailbox, `per_team` prospects with step 1 sent.

    `ids`: mailbox id by address, in `addresses` order (mailbox n is in team
    n % len(team_ids)). A team's replies are spread over its mailboxes. Returns
    the targets (enrollment id, reply-to mailbox address, Message-ID we sent).
    """
    from core.models import Enrollment, Prospect, SentMessage, Sequence, SequenceStep, utcnow
    from worker.sync.mime import new_message_id

    now = utcnow()
    ordered = list(ids)
    targets: list[tuple[int, str, str]] = []
    for t, team_id in enumerate(team_ids):
        team_boxes = ordered[t :: len(team_ids)]
        if not team_boxes:
            continue
        sequence = Sequence(team_id=team_id, mailbox_id=ids[team_boxes[0]], name="Scale")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="<p>Hi</p>"),
            SequenceStep(
                position=1, delay_seconds=86400 * 30, subject="Again", body_html="<p>Again</p>"
            ),
        ]
        session.add(sequence)
        session.flush()
        for p in range(per_team):
            prospect = Prospect(team_id=team_id, email=f"p{p}@customer{t:03d}.test")
            session.add(prospect)
            session.flush()
            enrollment = Enrollment(
                team_id=team_id,
                sequence_id=sequence.id,
                prospect_id=prospect.id,
                state="active",
                next_step=1,
                next_step_at=now + timedelta(days=30),
                steps_sent=1,
                created_at=now,
            )
            session.add(enrollment)
            session.flush()
            message_id = new_message_id(team_boxes[0])
            session.add(
                SentMessage(
                    team_id=team_id,
                    mailbox_id=ids[team_boxes[0]],
                    enrollment_id=enrollment.id,
                    step_position=0,
                    prospect_id=prospect.id,
                    message_id=message_id,
                    subject="Hi",
                    to_addrs=[prospect.email],
                    status="sent",
                    sent_at=now,
                    claimed_at=now,
                )
            )
            targets.append((enrollment.id, team_boxes[p % len(team_boxes)], message_id))
    return targets


def age_folder_lists(mailbox_ids: list[int]) -> int:
    """Spread the moments of the kept folder lists (worker.sync.folders) over the last
    FOLDER_LIST_KEPT, one mailbox after another; returns how many cursors had one.

    Setup spreads them already, but every catch-up sync a listener asks at its start
    finds nothing new and lists again: left so, no list would age during the window
    and no sync in it would list, which a mailbox that has synced for a while does
    about once in ten minutes. Run once the catch-up syncs are done.
    """
    from sqlalchemy import select, update

    from core.db import session_scope
    from core.models import Mailbox, utcnow
    from worker.sync.folders import FOLDER_LIST_KEPT

    now = utcnow()
    step = FOLDER_LIST_KEPT / max(len(mailbox_ids), 1)
    with session_scope() as session:
        rows = session.execute(
            select(Mailbox.id, Mailbox.sync_cursor).where(Mailbox.id.in_(mailbox_ids))
        ).all()
        aged = []
        for n, (mailbox_id, cursor) in enumerate(sorted(rows)):
            listing = (cursor or {}).get("listing")
            if isinstance(listing, dict):
                at = (now - step * n).isoformat()
                aged.append(
                    {"id": mailbox_id, "sync_cursor": {**cursor, "listing": {**listing, "at": at}}}
                )
        if aged:
            session.execute(update(Mailbox), aged)
    return len(aged)
