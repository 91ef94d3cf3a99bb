"""Salesforce API calls per 1,000 logged activities.

Reproduce: `make bench-salesforce` (or `python -m bench.salesforce_calls --activities 1000`).

Runs the real outbox (worker.salesforce) against the TLS fake org through
simple-salesforce, on an SQLite file and a Redis database, and counts the API
calls the org charges (its Sforce-Limit-Info count). The workload: a team whose
recipients are all in Salesforce (60 % Contacts, 30 % Leads, 10 % converted
Leads); half of them had an email yesterday (their Tasks exist, Sightline knows
them), half are new today. Then N activities: 25 % sends (half to new people),
5 % replies, 40 % opens, 20 % clicks, 10 % document views (engagement on
today's and yesterday's emails), queued through the same functions the
product uses (`queue_salesforce_task`, `queue_engagement`).

Two arrivals are measured, each from a fresh org and database:

- burst: all N activities are queued, then the cron flushes until drained;
- spread: they arrive evenly over `--arrive-seconds`; the cron ticks every
  `--tick` seconds (simulated: due times are moved back, nothing sleeps),
  flushing a team when a batch is full or its oldest row waited
  SIGHTLINE_SALESFORCE_BATCH_SECONDS; engagement is debounced
  SIGHTLINE_SALESFORCE_ENGAGEMENT_DEBOUNCE_SECONDS.

Prints both, and compares with one call per activity. Asserts nothing.
Last line: `salesforce: <n> calls per 1000 activities` (the spread arrival).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from sqlalchemy import func, select, text, update

from bench.machine import load_average, load_note

if TYPE_CHECKING:
    from tests.fakes.salesforce import FakeSalesforce
    from tests.services.redis import ClaimedDatabase, PrivateRedisServer

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    calls: int
    by_resource: Counter[str] = field(default_factory=Counter)
    ticks: int = 0
    tasks: int = 0
    leftover: dict[str, int] = field(default_factory=dict)


def _resource(path: str) -> str:
    rest = path.split("/services/data/", 1)[-1].split("/", 1)[-1]
    if rest.startswith("sobjects/Task/describe"):
        return "describe"
    if rest.startswith("composite"):
        return "composite"
    if rest.startswith("jobs"):
        return "bulk"
    return rest.split("/", 1)[0] or "other"


class Workload:
    """Recipients and the activities of one run (seeded: both runs see the same)."""

    def __init__(self, activities: int, recipients: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.emails = [f"person{n:05d}@customer{n % 97:02d}.test" for n in range(recipients)]
        self.known = self.emails[: recipients // 2]
        self.new = self.emails[recipients // 2 :]
        self.kinds: list[str] = []
        for kind, share in [
            ("send", 0.25),
            ("reply", 0.05),
            ("open", 0.40),
            ("click", 0.20),
            ("document_view", 0.10),
        ]:
            self.kinds += [kind] * round(activities * share)
        self.kinds = self.kinds[:activities]
        self.rng.shuffle(self.kinds)
        # Sends come first within their slot so engagement has an email to be about.


@dataclass
class Services:
    fake: FakeSalesforce
    redis: ClaimedDatabase
    private_redis: PrivateRedisServer | None

    def stop(self) -> None:
        self.fake.stop()
        self.redis.release()
        if self.private_redis is not None:
            self.private_redis.stop()


def _setup_environment(tick: int) -> Services:
    from tests.fakes.salesforce import FakeSalesforce
    from tests.services import redis as test_redis

    var_dir = Path(tempfile.mkdtemp(prefix="sightline-bench-sf-"))
    server_url = test_redis.find_server()
    private = None
    if server_url is None:
        private = test_redis.PrivateRedisServer().start()
        claimed = test_redis.ClaimedDatabase(private.url(db=9), lock_fd=None)
    else:
        claimed = test_redis.claim_database(server_url)
    fake = FakeSalesforce().start()
    os.environ.update(
        {
            "SIGHTLINE_ENV": "test",
            "SIGHTLINE_VAR_DIR": str(var_dir),
            "DATABASE_URL": f"sqlite:///{var_dir / 'bench.db'}",
            "REDIS_URL": claimed.url,
            "SECRET_KEY": "bench-secret-key-0123456789-abcdefghijklmnop",
            "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "SIGHTLINE_SALESFORCE_FLUSH_SECONDS": str(tick),
            "SALESFORCE_INSTANCE_URL": fake.instance_url,
            "SALESFORCE_ACCESS_TOKEN": fake.access_token,
            "REQUESTS_CA_BUNDLE": fake.combined_ca_bundle(),
            "LOG_LEVEL": "WARNING",
        }
    )
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    return Services(fake, claimed, private)


def _reset(fake: object) -> None:
    from config import get_settings
    from core.db import get_engine
    from core.models import Base
    from core.redis import get_redis
    from tests.fakes.salesforce import FakeSalesforce

    assert isinstance(fake, FakeSalesforce)
    with get_engine().begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(text(f'DELETE FROM "{table.name}"'))
    get_redis().flushdb()
    fake.reset(api_max=5_000_000)
    os.environ["SALESFORCE_ACCESS_TOKEN"] = fake.access_token  # a fresh org, a fresh session
    get_settings.cache_clear()


def _seed(fake: object, work: Workload) -> None:
    from tests.fakes.salesforce import FakeSalesforce

    assert isinstance(fake, FakeSalesforce)
    for n, email in enumerate(work.emails):
        share = n % 10
        if share < 6:
            fake.add_contact(email)
        elif share < 9:
            fake.add_lead(email)
        else:
            fake.add_lead(email, converted_to=fake.add_contact(f"converted.{email}"))


class Team:
    """One team's mailbox and prospects, and the product's own queueing calls."""

    def __init__(self, work: Workload) -> None:
        from core.db import session_scope
        from core.models import Mailbox, Prospect
        from core.models import Team as TeamRow

        self.work = work
        with session_scope() as session:
            team = TeamRow(name="Bench")
            session.add(team)
            session.flush()
            mailbox = Mailbox(
                team_id=team.id, kind="imap", email="rep@seller.test", credentials_encrypted="-"
            )
            session.add(mailbox)
            session.flush()
            self.team_id, self.mailbox_id = team.id, mailbox.id
            prospects = [Prospect(team_id=team.id, email=e) for e in work.emails]
            session.add_all(prospects)
            session.flush()
            self.prospect = {p.email: p.id for p in prospects}
        self.sent: list[tuple[int, str]] = []  # (sent message id, email)
        self.serial = 0

    def send(self, email: str) -> None:
        from core.db import session_scope
        from core.events import queue_salesforce_task
        from core.models import SentMessage, utcnow
        from worker.salesforce.engagement import sent_task_key

        self.serial += 1
        with session_scope() as session:
            sent = SentMessage(
                team_id=self.team_id,
                mailbox_id=self.mailbox_id,
                prospect_id=self.prospect[email],
                message_id=f"<bench.{self.serial}@seller.test>",
                subject=f"Quick question #{self.serial}",
                to_addrs=[email],
                status="sent",
                sent_at=utcnow(),
            )
            session.add(sent)
            session.flush()
            queue_salesforce_task(
                session,
                team_id=self.team_id,
                key=sent_task_key(sent.id),
                kind="task_sent",
                who_email=email,
                event_id=None,
                payload={
                    "subject": f"Email: {sent.subject}",
                    "description": f"To: {email}\nFrom: rep@seller.test\n\nHi, a quick question.",
                    "activity_date": utcnow().date().isoformat(),
                },
            )
            self.sent.append((sent.id, email))

    def reply(self) -> None:
        from core.db import session_scope
        from core.events import queue_salesforce_task

        _, email = self.work.rng.choice(self.sent)
        self.serial += 1
        with session_scope() as session:
            queue_salesforce_task(
                session,
                team_id=self.team_id,
                key=f"task:reply:bench:{self.serial}",
                kind="task_reply",
                who_email=email,
                event_id=None,
                payload={"subject": "Reply: Quick question", "description": "Sounds good."},
            )

    def engage(self, kind: str) -> None:
        from core.db import session_scope
        from core.models import utcnow
        from worker.salesforce.engagement import queue_engagement

        sent_id, _ = self.work.rng.choice(self.sent)
        with session_scope() as session:
            queue_engagement(session, sent_message_id=sent_id, kind=kind, occurred_at=utcnow())

    def activity(self, kind: str, new_left: list[str]) -> None:
        if kind == "send":
            use_new = new_left and (self.work.rng.random() < 0.5 or not self.work.known)
            self.send(new_left.pop() if use_new else self.work.rng.choice(self.work.known))
        elif kind == "reply":
            self.reply()
        else:
            self.engage(kind)


def _advance(seconds: int) -> None:
    """Simulated time: everything due or leased becomes `seconds` older."""
    from core.db import session_scope
    from core.models import SalesforceOutbox

    step = timedelta(seconds=seconds)
    with session_scope() as session:
        rows = session.execute(
            select(
                SalesforceOutbox.id, SalesforceOutbox.next_attempt_at, SalesforceOutbox.claimed_at
            ).where(SalesforceOutbox.status != "done")
        ).all()
        for row_id, due, claimed in rows:
            session.execute(
                update(SalesforceOutbox)
                .where(SalesforceOutbox.id == row_id)
                .values(next_attempt_at=due - step, claimed_at=claimed - step if claimed else None)
            )


def _tick(team: Team) -> bool:
    """One cron tick: flush the team if it is ready. True if it was."""
    from core.models import utcnow
    from worker.salesforce.outbox import flush_team, teams_to_flush

    if team.team_id in teams_to_flush(utcnow()):
        flush_team(team.team_id)
        return True
    return False


def _open_rows() -> int:
    from core.db import session_scope
    from core.models import SalesforceOutbox

    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(SalesforceOutbox)
                .where(SalesforceOutbox.status.in_(["pending", "in_flight"]))
            )
            or 0
        )


def run(fake: object, args: argparse.Namespace, spread: bool) -> Result:
    from core.db import session_scope
    from core.models import SalesforceOutbox
    from tests.fakes.salesforce import FakeSalesforce

    assert isinstance(fake, FakeSalesforce)
    _reset(fake)
    work = Workload(args.activities, args.recipients, args.seed)
    _seed(fake, work)
    team = Team(work)
    # Yesterday: every known person had an email, logged; Sightline knows them.
    for email in work.known:
        team.send(email)
    _advance(args.batch + 1)
    for _ in range(100):
        if not _open_rows():
            break
        _tick(team)
        _advance(args.tick)
    else:
        raise SystemExit("the warm-up never drained: see the log lines above")
    team.sent = list(team.sent)
    fake.reset_calls()
    used_before = fake.api_usage[0]

    new_left = list(work.new)
    slots = max(1, args.arrive_seconds // args.tick) if spread else 1
    per_slot = -(-len(work.kinds) // slots)
    ticks = 0
    for slot in range(slots):
        kinds = work.kinds[slot * per_slot : (slot + 1) * per_slot]
        kinds.sort(key=lambda k: k != "send")  # a slot's sends before its engagement
        for kind in kinds:
            team.activity(kind, new_left)
        _tick(team)
        _advance(args.tick)
        ticks += 1
    while _open_rows() and ticks < 10_000:
        _tick(team)
        _advance(args.tick)
        ticks += 1

    result = Result(calls=fake.api_usage[0] - used_before, ticks=ticks)
    result.by_resource = Counter(_resource(c.path) for c in fake.calls if c.status < 500)
    result.tasks = len(fake.tasks())
    with session_scope() as session:
        result.leftover = {
            str(status): int(n)
            for status, n in session.execute(
                select(SalesforceOutbox.status, func.count()).group_by(SalesforceOutbox.status)
            )
            if status != "done"
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--activities", type=int, default=1000)
    parser.add_argument("--recipients", type=int, default=600)
    parser.add_argument("--tick", type=int, default=30, help="cron interval, seconds")
    parser.add_argument("--arrive-seconds", type=int, default=600)
    parser.add_argument("--batch", type=int, default=300, help="batch window, seconds")
    parser.add_argument("--debounce", type=int, default=300, help="engagement debounce, seconds")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    load = load_average()  # before this bench's own work: how busy the machine already was
    os.environ["SIGHTLINE_SALESFORCE_BATCH_SECONDS"] = str(args.batch)
    os.environ["SIGHTLINE_SALESFORCE_ENGAGEMENT_DEBOUNCE_SECONDS"] = str(args.debounce)
    logging.disable(logging.INFO)

    services = _setup_environment(args.tick)
    try:
        burst = run(services.fake, args, spread=False)
        spread = run(services.fake, args, spread=True)
    finally:
        services.stop()

    n = args.activities
    mix = Workload(n, args.recipients, args.seed).kinds
    counts = Counter(mix)
    print(
        f"workload: {n} activities ({counts['send']} sends, {counts['reply']} replies, "
        f"{counts['open']} opens, {counts['click']} clicks, {counts['document_view']} document "
        f"views), {args.recipients} recipients (half new), cron every {args.tick} s, batch window "
        f"{args.batch} s, engagement debounce {args.debounce} s"
    )
    for name, result in (("burst", burst), (f"spread over {args.arrive_seconds} s", spread)):
        print(
            f"  {name:<22} {result.calls:>4} calls ({dict(result.by_resource)}), "
            f"{result.tasks} Tasks in the org, {result.ticks} cron ticks, "
            f"not done: {result.leftover or 'none'}"
        )
    print(f"  one call per activity:  {n:>4} calls")
    per_1000 = spread.calls * 1000 / n
    print(f"salesforce: {per_1000:g} calls per 1000 activities, {load_note(load)}")


if __name__ == "__main__":
    main()
