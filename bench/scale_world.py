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


def proc_status(pid: int) -> dict[str, Any]:
    """/proc/<pid>/status: VmRSS (KiB), Threads and PPid as ints, Name as text; {} if gone."""
    found: dict[str, Any] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "Name":
                    found[key] = value.strip()
                elif key in ("VmRSS", "Threads", "PPid"):
                    found[key] = int(value.split()[0])
    except OSError:
        return {}
    return found


def setup(w: World, mailboxes: int, teams: int, per_team: int) -> dict[str, Any]:
    """Teams, Gmail mailboxes with live tokens, cursors and watches; sent steps to reply to."""
    from bench.scale_common import (
        addresses,
        create_teams,
        insert_mailboxes,
        insert_pushes,
        sequences_with_step_one_sent,
    )
    from core.db import session_scope
    from core.models import PushKind, utcnow
    from tests.fakes.gmail.store import Watch

    now = utcnow()
    store = w.gmail.store
    expiration = int((time.time() + 7 * 86400) * 1000)
    rows = []
    for address in addresses(mailboxes, teams):
        creds = w.gmail.grant(address)
        user = store.user(address)
        user.watch = Watch(
            topic=w.gmail.topic, label_ids=["INBOX"], behavior="include", expiration_ms=expiration
        )
        cursor = {"history_id": str(user.history_id), "synced_at": now.isoformat()}
        rows.append((address, creds, cursor))
    with session_scope() as session:
        team_ids = create_teams(session, teams)
        ids = insert_mailboxes(session, "gmail", team_ids, rows, now)
        insert_pushes(
            session, PushKind.GMAIL_WATCH, {i: a for a, i in ids.items()}, now + timedelta(days=7)
        )
        targets = sequences_with_step_one_sent(session, ids, team_ids, per_team)
    return {"addresses": list(ids), "targets": targets, "ids": ids}
