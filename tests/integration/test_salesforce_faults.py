"""The fault run: every activity logged exactly once while Salesforce and the workers fail.

Real RQ `worker` processes (two) and the `cron` process, started from the
Procfile, drain two teams' outboxes into the TLS fake org: one team connected
by OAuth (refresh tokens rotated on every refresh), one on the settings-level
org (username/password). Meanwhile:

- 10 % of API requests fail, drawn from every kind: 500, 502, 503,
  UNABLE_TO_LOCK_ROW (per record), INVALID_SESSION_ID (a refresh, then the
  call again), REQUEST_LIMIT_EXCEEDED (the org is parked), a write that lands
  but is never answered (dropped connection, or held past the client's
  timeout), and latency past the timeout; each kind is also armed once so
  every kind happens in every run;
- a validation rule refuses the activities whose subject says "[blocked]"
  (FIELD_CUSTOM_VALIDATION_EXCEPTION: permanent);
- some Contacts are deleted and re-created under the same address after
  Sightline cached them (ENTITY_IS_DELETED, then resolved again);
- a random worker is SIGKILLed every few seconds and restarted.

Then: every send and reply is one Task in the org, or a dead letter when (and
only when) it was blocked; no Task is duplicated; each email's Task carries
exactly the opens, clicks and document views queued for it.

`make test` runs a CI-sized run (`FAULT_RUN_ACTIVITIES`); `make bench-salesforce-faults`
runs 5,000 activities (bench/salesforce_faults.py) with the same `fault_run`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from config import Settings, get_settings
from core.db import session_scope
from core.events import queue_salesforce_task
from core.models import Mailbox, OutboxStatus, Prospect, SalesforceOutbox, SentMessage, Team, utcnow
from core.redis import get_redis
from tests.conftest import service_environment
from tests.fakes.salesforce import FAULT_KINDS, FakeSalesforce
from tests.stack import Stack
from worker.salesforce.connections import authorize_link, exchange_code, save_grant
from worker.salesforce.engagement import queue_engagement, sent_task_key
from worker.salesforce.task_records import task_key

pytestmark = pytest.mark.integration

FAULT_RUN_ACTIVITIES = 600
BLOCKED = "[blocked]"
FAST = {
    "SIGHTLINE_SALESFORCE_FLUSH_SECONDS": "1",
    "SIGHTLINE_SALESFORCE_BATCH_SECONDS": "0",
    "SIGHTLINE_SALESFORCE_LEASE_SECONDS": "6",
    "SIGHTLINE_SALESFORCE_RETRY_BASE_SECONDS": "1",
    # Faults bunched together are an outage to the product, which then backs off
    # for minutes (by design): capped here so the run drains within its timeout.
    "SIGHTLINE_SALESFORCE_RETRY_MAX_SECONDS": "8",
    "SIGHTLINE_SALESFORCE_PARK_SECONDS": "2",
    "SIGHTLINE_SALESFORCE_TIMEOUT_SECONDS": "2",
    "SIGHTLINE_SALESFORCE_ENGAGEMENT_DEBOUNCE_SECONDS": "1",
    "SIGHTLINE_SALESFORCE_WHO_RETRY_SECONDS": "2",
    "LOG_LEVEL": "INFO",
}
ENGAGEMENT_FIELDS = {
    "open": "Sightline_Opens__c",
    "click": "Sightline_Clicks__c",
    "document_view": "Sightline_Document_Views__c",
}


@dataclass
class FaultRunResult:
    activities: int
    seconds: float
    kills: int
    faults: Counter[str]
    api_calls: int
    tasks: int
    dead_letters: int
    blocked: int
    problems: list[str] = field(default_factory=list)


class _TeamLoad:
    """One team: its people, what it sent, and the engagement the run queued."""

    def __init__(self, team_id: int, mailbox_id: int, emails: list[str], rng: random.Random):
        self.team_id = team_id
        self.mailbox_id = mailbox_id
        self.emails = emails
        self.rng = rng
        with session_scope() as session:
            prospects = [Prospect(team_id=team_id, email=e) for e in emails]
            session.add_all(prospects)
            session.flush()
            self.prospect = {p.email: p.id for p in prospects}
        self.sent: list[tuple[int, str]] = []
        self.engagement: Counter[tuple[int, str]] = Counter()
        self.serial = 0

    def send(self) -> None:
        email = self.rng.choice(self.emails)
        self.serial += 1
        blocked = f" {BLOCKED}" if self.rng.random() < 0.03 else ""
        with session_scope() as session:
            sent = SentMessage(
                team_id=self.team_id,
                mailbox_id=self.mailbox_id,
                prospect_id=self.prospect[email],
                message_id=f"<fault.{self.team_id}.{self.serial}@seller.test>",
                subject=f"Hello {self.serial}{blocked}",
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
                payload={"subject": f"Email: {sent.subject}", "description": "Hi there."},
            )
            self.sent.append((sent.id, email))

    def reply(self) -> None:
        _, email = self.rng.choice(self.sent)
        self.serial += 1
        blocked = f" {BLOCKED}" if self.rng.random() < 0.03 else ""
        with session_scope() as session:
            queue_salesforce_task(
                session,
                team_id=self.team_id,
                key=f"task:reply:fault:{self.team_id}:{self.serial}",
                kind="task_reply",
                who_email=email,
                event_id=None,
                payload={"subject": f"Reply {self.serial}{blocked}", "description": "Yes."},
            )

    def engage(self, kind: str) -> None:
        sent_id, _ = self.rng.choice(self.sent)
        with session_scope() as session:
            queue_engagement(session, sent_message_id=sent_id, kind=kind, occurred_at=utcnow())
        self.engagement[(sent_id, kind)] += 1

    def activity(self, kind: str) -> None:
        if kind == "send" or not self.sent:
            self.send()
        elif kind == "reply":
            self.reply()
        else:
            self.engage(kind)


def _connect_oauth(team_id: int) -> None:
    """The org side of the OAuth web-server flow (the browser side is test_oauth_binding's):
    authorize → approve → code exchanged → saved."""
    url, login_url = authorize_link("a-state", None)
    answer = requests.get(url, allow_redirects=False, timeout=10)
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    assert query["state"] == ["a-state"]
    save_grant(team_id, exchange_code(query["code"][0], login_url))


def _make_team(name: str, recipients: int, fake: FakeSalesforce, rng: random.Random) -> _TeamLoad:
    with session_scope() as session:
        team = Team(name=name)
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id, kind="imap", email=f"rep@{name}.test", credentials_encrypted="-"
        )
        session.add(mailbox)
        session.flush()
        team_id, mailbox_id = team.id, mailbox.id
    emails = [f"p{n}@{name}-customer.test" for n in range(recipients)]
    for n, email in enumerate(emails):
        if n % 5 == 4:
            fake.add_lead(email)
        else:
            fake.add_contact(email)
    return _TeamLoad(team_id, mailbox_id, emails, rng)


def _open_work(excluded_sends: set[int]) -> int:
    """Rows still to settle (engagement of a dead-lettered email waits for a person)."""
    with session_scope() as session:
        rows = session.execute(
            select(SalesforceOutbox.kind, SalesforceOutbox.status, SalesforceOutbox.payload)
        ).all()
    open_rows = 0
    for kind, status, payload in rows:
        if status in (OutboxStatus.DONE, OutboxStatus.FAILED):
            continue
        if kind == "task_engagement" and int(payload["sent_message_id"]) in excluded_sends:
            continue
        open_rows += 1
    return open_rows


def _state() -> str:
    """What is left, for a failure message."""
    with session_scope() as session:
        left = session.execute(
            select(
                SalesforceOutbox.kind,
                SalesforceOutbox.status,
                SalesforceOutbox.last_error,
                func.count(),
                func.min(SalesforceOutbox.next_attempt_at),
            )
            .where(SalesforceOutbox.status.not_in([OutboxStatus.DONE, OutboxStatus.FAILED]))
            .group_by(SalesforceOutbox.kind, SalesforceOutbox.status, SalesforceOutbox.last_error)
        ).all()
    keys = sorted(
        k.decode() if isinstance(k, bytes) else str(k) for k in get_redis().keys("sightline:*")
    )
    return f"now={utcnow()} left={left} redis={keys}"


def _failed_sends() -> set[int]:
    with session_scope() as session:
        keys = session.scalars(
            select(SalesforceOutbox.key).where(
                SalesforceOutbox.kind == "task_sent",
                SalesforceOutbox.status == OutboxStatus.FAILED,
            )
        ).all()
    return {int(k.rpartition(":")[2]) for k in keys}


def fault_run(
    fake: FakeSalesforce,
    environment: dict[str, str],
    log_dir: Path,
    *,
    activities: int,
    seed: int = 7,
    drain_timeout: float = 150.0,
) -> FaultRunResult:
    """Run the fault storm (see the module docstring) and check the outcome.

    `environment` is what the subprocesses get (database, Redis, CA bundle); the
    calling process must point at the same services. Returns the numbers and,
    in `problems`, every broken promise found (empty when all held).
    """
    rng = random.Random(seed)
    fake.configure(rotate_refresh_tokens=True, validation_rules=(("Task", "Subject", BLOCKED),))
    recipients = max(20, activities // 12)
    oauth_team = _make_team("oauth", recipients, fake, rng)
    default_team = _make_team("default", recipients, fake, rng)
    _connect_oauth(oauth_team.team_id)
    teams = [oauth_team, default_team]

    kinds = ["send"] * 25 + ["reply"] * 5 + ["open"] * 40 + ["click"] * 20 + ["document_view"] * 10
    plan = [rng.choice(kinds) for _ in range(activities)]
    stack = Stack({**environment, **FAST}, log_dir)
    stack.commands["worker-2"] = stack.commands["worker"]
    workers = ["worker", "worker-2"]
    started = time.monotonic()
    used_before = fake.api_usage[0]
    # Every kind once, in random order, on every other call from the first (a
    # CI-sized run makes only ~30 calls: a kind armed further in might never fire;
    # ten in a row would be an outage, which backs off for minutes); then 10 % at random.
    for n, kind in enumerate(rng.sample(FAULT_KINDS, len(FAULT_KINDS))):
        seconds = 3.0 if kind in ("latency", "commit_then_hang") else None
        fake.faults.add(kind, count=1, seconds=seconds, skip=n)
    fake.faults.rate(0.10, kinds=FAULT_KINDS, seed=seed, seconds=3.0)
    stack.start("cron", *workers)
    kills = 0
    next_kill = time.monotonic() + rng.uniform(1.5, 4.0)
    staled = False
    try:
        produced = 0
        deadline = None
        while True:
            now = time.monotonic()
            if produced < len(plan):
                for kind in plan[produced : produced + 25]:
                    rng.choice(teams).activity(kind)
                produced = min(len(plan), produced + 25)
                if not staled and produced >= len(plan) * 0.4:
                    # Contacts Sightline already knows are deleted and made again.
                    for team in teams:
                        for email in team.emails[: max(2, recipients // 20)]:
                            for record in fake.records("Contact"):
                                if record["Email"] == email:
                                    fake.delete(record["Id"])
                                    fake.add_contact(email, last_name="Again")
                    staled = True
            elif deadline is None:
                deadline = now + drain_timeout
            elif _open_work(_failed_sends()) == 0:
                break
            elif now > deadline:
                raise AssertionError(f"the outbox did not drain: {_state()}\n{stack.logs()}")
            if now >= next_kill:
                stack.restart(rng.choice(workers))  # SIGKILL the group, then a fresh one
                kills += 1
                next_kill = now + rng.uniform(1.5, 4.0)
            time.sleep(0.1)
        fired = Counter(kind for kind, _, _ in fake.faults.fired)
        fake.faults.clear()
        seconds = time.monotonic() - started
    finally:
        stack.stop()
    result = FaultRunResult(
        activities=activities,
        seconds=seconds,
        kills=kills,
        faults=fired,
        api_calls=fake.api_usage[0] - used_before,
        tasks=len(fake.tasks()),
        dead_letters=0,
        blocked=0,
    )
    _check(fake, teams, result)
    return result


def _check(fake: FakeSalesforce, teams: list[_TeamLoad], result: FaultRunResult) -> None:
    problems = result.problems
    with session_scope() as session:
        rows = session.scalars(select(SalesforceOutbox)).all()
        for row in rows:
            session.expunge(row)
    written: dict[str, SalesforceOutbox] = {}
    for row in rows:
        if row.kind == "task_engagement":
            continue
        blocked = BLOCKED in str(row.payload.get("subject"))
        result.blocked += blocked
        if row.status == OutboxStatus.FAILED:
            result.dead_letters += 1
            if not blocked:
                problems.append(f"dead letter that was not blocked: {row.key} {row.last_error}")
            elif "FIELD_CUSTOM_VALIDATION_EXCEPTION" not in (row.last_error or ""):
                problems.append(f"blocked row failed for another reason: {row.last_error}")
        elif row.status == OutboxStatus.DONE:
            if blocked:
                problems.append(f"blocked row marked done: {row.key}")
            written[task_key(row.key)] = row
        else:
            problems.append(f"row left {row.status}: {row.key} {row.last_error}")
    tasks = fake.tasks()
    keys = Counter(str(t["Sightline_Key__c"]) for t in tasks)
    duplicated = {k: n for k, n in keys.items() if n > 1}
    if duplicated:
        problems.append(f"duplicated Tasks: {duplicated}")
    if set(keys) != set(written):
        problems.append(
            f"Tasks without a done row: {len(set(keys) - set(written))}, "
            f"done rows without a Task: {len(set(written) - set(keys))}"
        )
    by_key = {str(t["Sightline_Key__c"]): t for t in tasks}
    for team in teams:
        for sent_id, _ in team.sent:
            task = by_key.get(task_key(sent_task_key(sent_id)))
            if task is None:
                continue
            for kind, field_name in ENGAGEMENT_FIELDS.items():
                expected = team.engagement[(sent_id, kind)]
                if int(task.get(field_name) or 0) != expected:
                    problems.append(
                        f"sent {sent_id} {kind}: Task says {task.get(field_name)}, "
                        f"{expected} were queued"
                    )


# -- the CI-sized run ---------------------------------------------------------------------


@pytest.fixture
def database_url(postgresql_database_url: str) -> str:
    """PostgreSQL only: the engine several workers share in production."""
    return postgresql_database_url


@pytest.fixture
def storm_environment(
    env: Settings,
    database_url: str,
    redis_url: str,
    fake_salesforce: FakeSalesforce,
    fake_salesforce_ca_bundle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    extra = {
        "SALESFORCE_LOGIN_URL": fake_salesforce.instance_url,
        "SALESFORCE_CLIENT_ID": fake_salesforce.oauth["client_id"],
        "SALESFORCE_CLIENT_SECRET": fake_salesforce.oauth["client_secret"],
        "SALESFORCE_USERNAME": fake_salesforce.oauth["username"],
        "SALESFORCE_PASSWORD": fake_salesforce.oauth["password"],
        "SALESFORCE_SECURITY_TOKEN": fake_salesforce.oauth["security_token"],
    }
    for name, value in {**extra, **FAST}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield {
        **service_environment(database_url, redis_url, env.var_dir),
        **extra,
        "REQUESTS_CA_BUNDLE": fake_salesforce_ca_bundle,
    }


def test_every_activity_lands_once_through_faults_and_killed_workers(
    fake_salesforce: FakeSalesforce, storm_environment: dict[str, str], tmp_path: Path
) -> None:
    result = fault_run(
        fake_salesforce, storm_environment, tmp_path / "logs", activities=FAULT_RUN_ACTIVITIES
    )
    assert result.problems == []
    assert set(result.faults) == set(FAULT_KINDS), result  # every kind of fault happened
    assert result.kills >= 2
    assert result.blocked > 0 and result.dead_letters == result.blocked
