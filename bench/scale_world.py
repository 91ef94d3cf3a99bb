"""The world the scale benches share: Gmail mailboxes connected as at 10,000, CPU from /proc.

`setup` creates mailboxes as connected ones would be: encrypted credentials with
a live access token, a cursor at the mailbox's current historyId, a live watch
(mailbox_push row + the fake's users.watch), synced a moment ago; per team a
sequence whose step 1 was sent to `per_team` prospects (what replies answer).
Used by `bench.providers_scale` and `bench.sync_cpu`.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from bench.providers import World

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_group() -> dict[int, float]:
    """CPU seconds per process group: live processes plus what their reaped children used."""
    totals: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        pgid = int(fields[2])
        used = sum(int(v) for v in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
        totals[pgid] = totals.get(pgid, 0.0) + used
    return totals


def cpu_by_name(*names: str) -> float:
    """CPU seconds of the processes named so, including their reaped children of the same name.

    A PostgreSQL backend that exits takes its CPU time out of a sum over live
    processes (the sum can even fall): the postmaster's cutime/cstime, which
    holds what its reaped children used, is added, so the total only grows.
    """
    stats: dict[int, tuple[str, int, list[str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        stats[int(entry)] = (comm, int(fields[1]), fields)

    def named(pid: int) -> bool:
        return pid in stats and any(stats[pid][0].startswith(n) for n in names)

    total = 0
    for pid, (_, parent, fields) in stats.items():
        if not named(pid):
            continue
        total += int(fields[11]) + int(fields[12])  # utime stime
        if not named(parent):  # the top of its tree: add its reaped children
            total += int(fields[13]) + int(fields[14])  # cutime cstime
    return total / CLOCK_TICKS


def setup(w: World, mailboxes: int, teams: int, per_team: int) -> dict[str, Any]:
    """Teams, mailboxes with live tokens, cursors and watches; sent steps to reply to."""
    from sqlalchemy import insert

    from core.crypto import encrypt_json
    from core.db import session_scope
    from core.models import (
        Enrollment,
        Mailbox,
        MailboxPush,
        Prospect,
        PushKind,
        SentMessage,
        Sequence,
        SequenceStep,
        Team,
        utcnow,
    )
    from tests.fakes.gmail.store import Watch
    from worker.sync.mime import new_message_id

    now = utcnow()
    store = w.gmail.store
    addresses = [f"rep{n:05d}@team{n % teams:03d}.test" for n in range(mailboxes)]
    expiration = int((time.time() + 7 * 86400) * 1000)
    rows = []
    for address in addresses:
        creds = w.gmail.grant(address)
        user = store.user(address)
        user.watch = Watch(
            topic=w.gmail.topic, label_ids=["INBOX"], behavior="include", expiration_ms=expiration
        )
        rows.append((address, creds, user.history_id))
    with session_scope() as session:
        team_ids = []
        for t in range(teams):
            team = Team(name=f"Scale {t:03d}")
            session.add(team)
            session.flush()
            team_ids.append(team.id)
        session.execute(
            insert(Mailbox),
            [
                {
                    "team_id": team_ids[n % teams],
                    "kind": "gmail",
                    "email": address,
                    "credentials_encrypted": encrypt_json(creds),
                    "sync_cursor": {"history_id": str(history), "synced_at": now.isoformat()},
                    "status": "active",
                    "last_synced_at": now,
                    "created_at": now - timedelta(days=1),
                }
                for n, (address, creds, history) in enumerate(rows)
            ],
        )
        ids = {m.email: m.id for m in session.query(Mailbox).all()}
        session.execute(
            insert(MailboxPush),
            [
                {
                    "mailbox_id": ids[a],
                    "kind": PushKind.GMAIL_WATCH,
                    "external_id": a,
                    "expires_at": now + timedelta(days=7),
                    "renewed_at": now,
                    "created_at": now,
                }
                for a in addresses
            ],
        )
        # Per team: a sequence on its first mailbox, `per_team` prospects with step 1 sent.
        targets: list[
            tuple[int, str, str]
        ] = []  # (enrollment id, reply-to mailbox address, Message-ID)
        for t, team_id in enumerate(team_ids):
            team_boxes = [a for n, a in enumerate(addresses) if n % teams == t]
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
                mailbox_address = team_boxes[p % len(team_boxes)]
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
                targets.append((enrollment.id, mailbox_address, message_id))
    return {"addresses": addresses, "targets": targets, "ids": ids}
