"""10,000 Gmail mailboxes, one new message a minute each, on this machine: CPU and reply -> halt.

Reproduce: make bench-providers-scale
    (python -m bench.providers_scale --mailboxes 10000 --seconds 120 --workers 8 --process sync)

What runs, all on this machine (2 cores here):
- PostgreSQL and Redis (the test services), migrated fresh;
- the Procfile's `web` (gunicorn + uvicorn workers), N `sync` processes
  (SyncWorker on the sync queue; or, with --process worker, N `worker`s: rq
  HerokuWorker, a forked work horse per job) and `cron`;
- in this process: the fake Gmail serving every mailbox over TLS, its Pub/Sub
  pushing to `web` (4 delivery threads, tokens reused as Google does), and the
  driver delivering one message per mailbox per minute, spread evenly
  (mailboxes / 60 messages a second), 1 % of them replies to a step we sent.

Mailboxes are created as connected ones would be: encrypted credentials with a
live access token, a cursor at the mailbox's current historyId, a live watch
(mailbox_push row + the fake's users.watch), synced a moment ago.

Measured over the window (after a warm-up): messages delivered, pushes acknowledged,
syncs finished, the sync backlog left at the end, CPU seconds per role from /proc
(worker processes including their reaped work horses, web, PostgreSQL, Redis,
this process), and reply -> halt latency (reply delivered at the fake -> the
enrolment's `replied` transition committed) for the replies that finished within
the window plus a drain period, and how many did not. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.machine import load_average, load_note  # noqa: E402
from bench.providers import World, newsletter, percentile, reply  # noqa: E402

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
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        if any(comm.startswith(n) for n in names):
            fields = stat[stat.rfind(")") + 2 :].split()
            total += sum(int(v) for v in fields[11:13]) / CLOCK_TICKS  # the process's own
    return total


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument(
        "--drain", type=float, default=30.0, help="wait for replies after the window"
    )
    parser.add_argument("--workers", type=int, default=8, help="how many of --process")
    parser.add_argument(
        "--process",
        choices=("sync", "worker"),
        default="sync",
        help="the Procfile process that syncs: `sync` (SyncWorker, the sync queue) or "
        "`worker` (HerokuWorker, a forked work horse per job, every queue)",
    )
    parser.add_argument("--reply-share", type=float, default=0.01)
    parser.add_argument("--teams", type=int, default=500)
    args = parser.parse_args()
    load = load_average()  # before this bench's own work: how busy the machine already was

    from sqlalchemy import select

    from core.db import session_scope
    from core.models import EnrollmentTransition
    from tests.services import process
    from tests.stack import Stack

    w = World()
    stack: Stack | None = None
    try:
        w.start()
        # More Pub/Sub delivery threads than the tests use: ~170 pushes a second.
        w.gmail.stop()
        from tests.fakes.gmail import FakeGmail

        w.gmail = FakeGmail(push_threads=4).start()
        w.cleanup.append(w.gmail.stop)
        os.environ.update(w.gmail.environment())
        w.env.update(w.gmail.environment())
        w.env["SIGHTLINE_SYNC_POLL_SECONDS"] = "60"
        w.env["WEB_CONCURRENCY"] = "2"
        from config import get_settings

        get_settings.cache_clear()
        per_team = max(
            1,
            int(args.mailboxes * args.reply_share * (args.seconds + args.warmup) / 60 / args.teams)
            + 2,
        )
        t0 = time.monotonic()
        world = setup(w, args.mailboxes, args.teams, per_team)
        print(
            f"setup: {args.mailboxes} mailboxes, {args.teams} teams, "
            f"{len(world['targets'])} sent steps in {time.monotonic() - t0:.0f} s"
        )
        audience = w.env["GMAIL_PUSH_AUDIENCE"]
        w.gmail.subscribe_push(audience, audience=audience)

        stack = Stack(w.env, w.var_dir / "logs")
        stack.start("web", "cron")
        logs = w.var_dir / "logs"
        if args.process == "sync":
            # Delayed (back-off) syncs need RQ's scheduler, which `worker` runs: one, on
            # the other queues only, so the sync jobs go to the `sync` processes.
            other = [a for a in stack.commands["worker"] if a != "sync"]
            stack.running["scheduler"] = process.spawn(
                other, log_path=logs / "scheduler.log", env=stack.env, cwd=ROOT
            )
        for n in range(args.workers):
            stack.running[f"worker{n}"] = process.spawn(
                stack.commands[args.process],
                log_path=logs / f"worker{n}.log",
                env=stack.env,
                cwd=ROOT,
            )
        from bench.providers import _wait_http

        _wait_http(w.port)
        time.sleep(3)

        rate = args.mailboxes / 60.0
        addresses: list[str] = world["addresses"]
        targets: list[tuple[int, str, str]] = list(world["targets"])
        random.Random(5).shuffle(targets)
        delivered_replies: dict[int, float] = {}
        stop = threading.Event()
        counters = {"messages": 0, "replies": 0}
        measuring = threading.Event()

        # Bulk mail is the same few messages to everyone: build them once, not 170 a second.
        bodies = [newsletter("team@seller.test", n) for n in range(20)]

        def drive() -> None:
            rng = random.Random(7)
            order = list(range(len(addresses)))
            rng.shuffle(order)
            started = time.monotonic()
            n = 0
            while not stop.is_set():
                due = started + n / rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                address = addresses[order[n % len(order)]]
                if measuring.is_set() and targets and rng.random() < args.reply_share:
                    enrollment_id, target, message_id = targets.pop()
                    delivered_replies[enrollment_id] = time.time()
                    w.gmail.deliver(target, reply("boss@customer.test", target, message_id))
                    counters["replies"] += 1
                else:
                    w.gmail.deliver(address, bodies[n % len(bodies)])
                counters["messages"] += 1
                n += 1

        driver = threading.Thread(target=drive, daemon=True)
        driver.start()
        time.sleep(args.warmup)

        def pids() -> dict[str, int]:
            return {name: proc.pid for name, proc in stack.running.items()}

        from rq import Queue

        from core.redis import get_redis

        redis = get_redis()
        sync_queue = Queue("sync", connection=redis)
        before_groups = cpu_by_group()
        before_pg = cpu_by_name("postgres")
        before_redis = cpu_by_name("redis-server")
        before_self = sum(os.times()[:2])
        before_msgs = counters["messages"]
        before_pushes = sum(1 for p in w.gmail.pubsub.published if p.delivered_at is not None)
        before_history = sum(1 for c in w.gmail.calls.all() if c.label == "users.history.list")
        backlog_start = len(sync_queue)
        window_start = time.monotonic()
        measuring.set()
        samples = []
        while time.monotonic() - window_start < args.seconds:
            time.sleep(5)
            samples.append(len(sync_queue))
        window = time.monotonic() - window_start
        measuring.clear()
        after_groups = cpu_by_group()
        after_pg = cpu_by_name("postgres")
        after_redis = cpu_by_name("redis-server")
        after_self = sum(os.times()[:2])
        messages = counters["messages"] - before_msgs
        pushes = (
            sum(1 for p in w.gmail.pubsub.published if p.delivered_at is not None) - before_pushes
        )
        backlog_end = len(sync_queue)
        stop.set()

        # Each sync reads history once: the fake's history.list calls count the syncs.
        syncs = (
            sum(1 for c in w.gmail.calls.all() if c.label == "users.history.list") - before_history
        )

        drain_until = time.monotonic() + args.drain
        replied: dict[int, float] = {}
        while time.monotonic() < drain_until:
            with session_scope() as session:
                rows = session.execute(
                    select(EnrollmentTransition.enrollment_id, EnrollmentTransition.at).where(
                        EnrollmentTransition.to_state == "replied",
                        EnrollmentTransition.enrollment_id.in_(list(delivered_replies)),
                    )
                ).all()
            replied = {int(e): at.timestamp() for e, at in rows}
            if len(replied) == len(delivered_replies):
                break
            time.sleep(1)
        latencies = [replied[e] - delivered_replies[e] for e in replied]

        def group_cpu(name_prefix: str) -> float:
            total = 0.0
            for name, pid in pids().items():
                if name.startswith(name_prefix):
                    total += after_groups.get(pid, 0.0) - before_groups.get(pid, 0.0)
            return total

        cores = os.cpu_count() or 1
        capacity = window * cores
        worker_cpu = group_cpu("worker")
        print(
            "command: make bench-providers-scale  (python -m bench.providers_scale "
            f"--mailboxes {args.mailboxes} --seconds {args.seconds:.0f} --workers {args.workers} "
            f"--process {args.process})"
        )
        print(
            f"machine: {cores} cores; window {window:.0f} s after {args.warmup:.0f} s warm-up; "
            f"{load_note(load)} at the start, {load_note()} at the end (other work on the machine "
            "competes for the same cores: the cpu-seconds per sync hold, throughput may not)"
        )
        print(
            f"offered: {messages / window:.1f} new messages/s "
            f"({args.mailboxes} mailboxes x 1/min), "
            f"{counters['replies']} replies among them"
        )
        print(
            f"pushes acknowledged by web: {pushes / window:.1f}/s; "
            f"syncs run: {syncs / window:.1f}/s"
        )
        print(
            f"sync backlog: {backlog_start} at start, {backlog_end} at end "
            f"(max {max(samples) if samples else 0} sampled every 5 s)"
        )
        print("CPU share of the machine (cpu-seconds / (window x cores)):")
        for label, used in (
            (f"{args.workers} x Procfile `{args.process}` (incl. work horses)", worker_cpu),
            ("one Procfile `worker` on the other queues", group_cpu("scheduler")),
            ("web (gunicorn + uvicorn workers)", group_cpu("web")),
            ("cron", group_cpu("cron")),
            ("PostgreSQL", after_pg - before_pg),
            ("Redis", after_redis - before_redis),
            ("fake Gmail + Pub/Sub + driver (this process)", after_self - before_self),
        ):
            print(f"  {label:<60} {used / capacity:6.1%}  ({used:7.1f} cpu-s)")
        if syncs:
            print(
                f"worker cpu per sync: {worker_cpu / syncs * 1000:.0f} ms; at this cost one core "
                f"syncs {syncs / worker_cpu:.0f}/s, so {args.mailboxes} mailboxes x 1 message/min "
                f"need {args.mailboxes / 60 / (syncs / worker_cpu):.1f} cores of workers"
            )
        done = len(latencies)
        if latencies:
            print(
                f"reply -> halt: {done}/{len(delivered_replies)} halted within the window "
                f"+ {args.drain:.0f} s; "
                f"p50 {statistics.median(latencies):.2f} s, "
                f"p95 {percentile(latencies, 0.95):.2f} s, "
                f"max {max(latencies):.2f} s"
            )
        else:
            print(
                f"reply -> halt: 0/{len(delivered_replies)} halted within the window "
                f"+ {args.drain:.0f} s"
            )
    finally:
        if stack is not None:
            stack.stop()
        w.stop()


if __name__ == "__main__":
    main()
