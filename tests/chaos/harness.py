"""The chaos run: sends, replies, bounces and tracking hits through real parts while they fail.

What it drives (full size; `CI` is the short form `make test` runs):

    685 enrolments in four 2-step sequences (two teams, two IMAP mailboxes each)
      → ~1,000 sends through the real SMTP server into Dovecot
    300 replies, 100 out-of-offices (SMTP), 70 hard bounces, 30 delay notices (LMTP)
      to step 1, each a few seconds after it arrived
    10,000 pixel and click hits on the real `web` process (gunicorn + uvicorn)

through PostgreSQL, a private `redis-server` with AOF `appendfsync everysec`
(the production setting), Dovecot, the SMTP server and the TLS fake Salesforce
running as its own process, with every Procfile process (`web`, two `worker`s,
`sync`, `cron`, `listener`, `events`) started from the Procfile. Meanwhile:

- every few seconds a random worker (`worker`, `sync`), the `events` consumer or
  the `listener` is SIGKILLed (its whole process group) and started again
  (`tests.stack`);
- Redis is restarted once, mid-run: gracefully (SIGTERM, the AOF is flushed), or
  with `crash=True` SIGKILLed, which may lose what was acknowledged in the last
  seconds before the crash (the everysec fsync window: measured and reported);
- Salesforce fails 10 % of calls with every error kind (503, 500, 502 from the
  edge, UNABLE_TO_LOCK_ROW, INVALID_SESSION_ID, a write applied but never
  answered, latency past the timeout), each kind also armed once, and answers
  REQUEST_LIMIT_EXCEEDED to everything for a while.

Then it drains (no more kills; faults stay on) and checks, from the database, the
SMTP server's log, the hit requests' answers and the org's Tasks:

    hits        every acknowledged hit (pixel 200, click 302) is one tracking_hits
                row: lost = acknowledged without a row, duplicated = extra rows
    answers     every delivered reply, out-of-office, bounce and delay notice is
                recorded against the step it answers
    enrolments  halted exactly as the message demands (replied / bounced / paused
                then resumed and finished / finished), no step claimed after a
                reply or bounce was recorded, each step sent once (SMTP log)
    Salesforce  one Task per send, reply and bounce (by Sightline key): none
                missing, none twice; each email's open and click counters equal
                what Sightline counted; dead letters listed
    logs        no secret of the run in any process's log

The last line is `chaos: lost <n>, duplicated <n>, missing tasks <n>, wrong halts <n>`.
Every hit carries a unique marker in its User-Agent, which is how a request is
found again among the stored hits.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import queue
import random
import smtplib
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import redis
import requests
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[2]
MARKER = "SightlineChaos/"
CLICK_URL = "https://example.com/pricing?utm=chaos"
KILLABLE = ("worker", "worker-2", "sync", "events", "listener")
PROCESSES = ("web", "worker", "worker-2", "sync", "cron", "listener", "events")
# With `appendfsync everysec` Redis fsyncs the AOF once a second, and when a fsync
# is slow it delays writes for up to one more second: a crash may lose up to two
# seconds of acknowledged writes (redis.io, "Redis persistence").
FSYNC_WINDOW_SECONDS = 2.0


@dataclass(frozen=True)
class Size:
    """How much traffic, and how fast the clock runs for it."""

    name: str
    hits: int
    enrollments: int
    replies: int
    auto_replies: int
    hard_bounces: int
    delays: int
    step_delay: int  # seconds from step 1 to step 2
    pause_seconds: int  # how long an out-of-office with no return date pauses
    enroll_seconds: float  # enrolments are spread over this long
    kill_every: tuple[float, float]
    limit_exceeded_seconds: float  # REQUEST_LIMIT_EXCEEDED on every call for this long
    drain_timeout: float
    fault_skip: int  # each fault kind is armed once, after up to this many calls
    # True: a killed `events` comes back under its old consumer name and drains its
    # own pending entries first, as a Heroku dyno does (DYNO=events.1). False: it
    # comes back as a new consumer, and the dead one's entries wait for XAUTOCLAIM
    # (60 s idle), as when a consumer is gone for good.
    events_keep_name: bool


FULL = Size(
    name="full",
    hits=10_000,
    enrollments=685,
    replies=300,
    auto_replies=100,
    hard_bounces=70,
    delays=30,
    step_delay=60,
    pause_seconds=20,
    enroll_seconds=150.0,
    kill_every=(4.0, 10.0),
    limit_exceeded_seconds=20.0,
    drain_timeout=480.0,
    fault_skip=30,
    events_keep_name=False,
)
CI = Size(
    name="ci",
    hits=1_000,
    enrollments=70,
    replies=30,
    auto_replies=10,
    hard_bounces=7,
    delays=3,
    step_delay=20,
    pause_seconds=6,
    enroll_seconds=12.0,
    kill_every=(3.0, 6.0),
    limit_exceeded_seconds=6.0,
    drain_timeout=240.0,
    fault_skip=4,
    events_keep_name=True,
)

# The Salesforce outbox and the clocks, run fast (as in test_salesforce_faults). The
# cron ticks (sequence steps, resumes, one-offs, the Salesforce flush) every 3 s, not
# 1 s: each tick is a forked job on the lowest queue, and at 1 s they piled up by
# the thousand behind the sends, a third of the workers' time (production: 10 s, 30 s).
FAST = {
    "SIGHTLINE_SALESFORCE_FLUSH_SECONDS": "3",
    "SIGHTLINE_SALESFORCE_BATCH_SECONDS": "0",
    "SIGHTLINE_SALESFORCE_LEASE_SECONDS": "6",
    "SIGHTLINE_SALESFORCE_RETRY_BASE_SECONDS": "1",
    "SIGHTLINE_SALESFORCE_PARK_SECONDS": "2",
    "SIGHTLINE_SALESFORCE_TIMEOUT_SECONDS": "2",
    "SIGHTLINE_SALESFORCE_ENGAGEMENT_DEBOUNCE_SECONDS": "1",
    "SIGHTLINE_SALESFORCE_WHO_RETRY_SECONDS": "2",
    "SIGHTLINE_SEQUENCE_TICK_SECONDS": "3",
    "SIGHTLINE_SYNC_POLL_SECONDS": "10",
    "SIGHTLINE_SEND_RECOVERY_SECONDS": "10",
}


# -- results --------------------------------------------------------------------------------


@dataclass
class ChaosResult:
    size: str
    seconds: float = 0.0
    redis_mode: str = "graceful"
    kills: Counter[str] = field(default_factory=Counter)
    unexpected_exits: list[str] = field(default_factory=list)
    redis_down_seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    api_calls: int = 0
    # hits
    hits_sent: int = 0
    hits_acknowledged: int = 0
    hits_refused: Counter[str] = field(default_factory=Counter)
    hits_lost: int = 0
    hits_lost_in_fsync_window: int = 0
    fsync_loss_oldest: float = 0.0  # seconds before the crash the oldest of those was answered
    hits_duplicated: int = 0
    hits_recorded_unacknowledged: int = 0
    hits_shed: int = 0
    # answers
    delivered: Counter[str] = field(default_factory=Counter)
    matched: Counter[str] = field(default_factory=Counter)
    answers_lost: int = 0
    answers_duplicated: int = 0
    quarantined: int = 0
    # enrolments and sends
    states: Counter[str] = field(default_factory=Counter)
    paused_and_resumed: int = 0
    wrong_halts: int = 0
    handover_window: int = 0
    # A reply or bounce recorded only after the enrolment had sent its last step
    # (the mailbox's sync was held back by a kill for longer than the step delay):
    # the enrolment rightly stays finished, and the follow-up had gone out.
    halted_after_last_step: Counter[str] = field(default_factory=Counter)
    sends: Counter[int] = field(default_factory=Counter)
    sends_duplicated: int = 0
    # Salesforce
    tasks_expected: int = 0
    tasks_in_org: int = 0
    tasks_missing: int = 0
    tasks_duplicated: int = 0
    engagement_mismatches: int = 0
    dead_letters: list[str] = field(default_factory=list)
    secrets_in_logs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.hits_lost + self.answers_lost

    @property
    def duplicated(self) -> int:
        return (
            self.hits_duplicated
            + self.answers_duplicated
            + self.sends_duplicated
            + self.tasks_duplicated
        )

    def line(self) -> str:
        return (
            f"chaos: lost {self.lost}, duplicated {self.duplicated}, "
            f"missing tasks {self.tasks_missing}, wrong halts {self.wrong_halts}"
        )

    def report(self) -> list[str]:
        def counts(counter: Counter[Any]) -> str:
            return ", ".join(f"{k} {n}" for k, n in sorted(counter.items())) or "none"

        kills = sum(self.kills.values())
        refused = sum(self.hits_refused.values())
        lines = [
            f"chaos ({self.size}): {sum(self.sends.values())} sends, {self.hits_sent} hits, "
            f"{sum(self.delivered.values())} answers in {self.seconds:.0f} s",
            f"processes SIGKILLed and restarted: {kills} ({counts(self.kills)}); "
            f"exited on their own: {len(self.unexpected_exits)}",
        ]
        if self.redis_mode == "crash":
            lines.append(
                f"redis: crashed (SIGKILL) once mid-run, back after "
                f"{self.redis_down_seconds * 1000:.0f} ms; "
                f"AOF appendfsync everysec: acknowledged hits lost in the fsync window "
                f"(answered at most {FSYNC_WINDOW_SECONDS:.0f} s before the crash): "
                f"{self.hits_lost_in_fsync_window}"
                + (
                    f", the oldest answered {self.fsync_loss_oldest * 1000:.0f} ms before it"
                    if self.hits_lost_in_fsync_window
                    else ""
                )
            )
        else:
            lines.append(
                f"redis: restarted once mid-run (SIGTERM: the AOF is flushed, nothing "
                f"acknowledged may be lost), back after {self.redis_down_seconds * 1000:.0f} ms"
            )
        lines += [
            f"salesforce faults injected: {sum(self.faults.values())} ({counts(self.faults)}); "
            f"API calls charged: {self.api_calls}",
            f"hits: {self.hits_sent} sent, {self.hits_acknowledged} acknowledged, "
            f"{refused} not acknowledged ({counts(self.hits_refused)}); lost {self.hits_lost}, "
            f"duplicated {self.hits_duplicated}, recorded though not acknowledged "
            f"{self.hits_recorded_unacknowledged}, shed by the rate limit {self.hits_shed}",
            "answers delivered vs matched: "
            + ", ".join(
                f"{kind} {self.matched[kind]}/{n}" for kind, n in sorted(self.delivered.items())
            )
            + f"; recorded twice {self.answers_duplicated}; quarantined {self.quarantined}",
            f"enrolments: {sum(self.states.values())} ({counts(self.states)}); paused by an "
            f"out-of-office and resumed {self.paused_and_resumed}; wrong halts "
            f"{self.wrong_halts}; steps handed over while a reply was being recorded "
            f"{self.handover_window}; answers recorded only after the last step went "
            f"({counts(self.halted_after_last_step)})",
            f"sends: {counts(self.sends)} (by step); sent twice {self.sends_duplicated}",
            f"salesforce Tasks: expected {self.tasks_expected}, in the org {self.tasks_in_org}, "
            f"missing {self.tasks_missing}, duplicated {self.tasks_duplicated}; engagement "
            f"counters that differ from Sightline's {self.engagement_mismatches}",
            f"dead letters: {len(self.dead_letters)}",
            *(f"  {d}" for d in self.dead_letters[:20]),
            f"secrets found in process logs: {len(self.secrets_in_logs)}",
            *(f"  {s}" for s in self.secrets_in_logs[:20]),
            f"problems: {len(self.problems)}",
            *(f"  {p}" for p in self.problems[:40]),
            self.line(),
        ]
        return lines


# -- services -------------------------------------------------------------------------------


class Services:
    """PostgreSQL, a private Redis with AOF everysec, Dovecot, SMTP and the fake org.

    Dovecot and the SMTP server may be handed in (the test suite's session
    servers); whatever is started here is stopped by `stop()`.
    """

    def __init__(self, work_dir: Path, *, dovecot: Any = None, smtp: Any = None) -> None:
        self.work_dir = work_dir
        self.dovecot = dovecot
        self.smtp = smtp
        self._own_dovecot = dovecot is None
        self._own_smtp = smtp is None
        self.database: Any = None
        self.redis: Any = None
        self.salesforce: Any = None

    def start(self) -> Services:
        from tests.fakes.salesforce.server import FakeSalesforceProcess
        from tests.services import postgres
        from tests.services.dovecot import DovecotServer
        from tests.services.redis import PrivateRedisServer
        from tests.services.smtp import SmtpServer

        self.database = postgres.TemporaryDatabase(postgres.find_server()).create()
        self.redis = PrivateRedisServer(appendonly=True, appendfsync="everysec").start()
        if self.dovecot is None:
            self.dovecot = DovecotServer().start()
        if self.smtp is None:
            self.smtp = SmtpServer(
                lmtp_host=self.dovecot.host,
                lmtp_port=self.dovecot.lmtp_port,
                password=self.dovecot.password,
            ).start()
        state_dir = self.work_dir / "salesforce"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.salesforce = FakeSalesforceProcess(state_dir).start()
        return self

    def stop(self) -> None:
        for action in (
            lambda: self.salesforce and self.salesforce.stop(),
            lambda: self._own_smtp and self.smtp and self.smtp.stop(),
            lambda: self._own_dovecot and self.dovecot and self.dovecot.stop(),
            lambda: self.redis and self.redis.close(),
            lambda: self.database and self.database.drop(),
        ):
            with contextlib.suppress(Exception):
                action()

    def ca_bundle(self) -> str:
        """The fake org's CA plus whatever bundle this machine already trusts."""
        base = os.environ.get("REQUESTS_CA_BUNDLE")
        extra = Path(base).read_text() if base and Path(base).is_file() else ""
        combined = self.work_dir / "requests-ca-bundle.pem"
        combined.write_text(Path(self.salesforce.ca_bundle).read_text() + "\n" + extra)
        return str(combined)


def environment(services: Services, size: Size, port: int) -> dict[str, str]:
    """What every process of the run gets: the services, the fake org, fast clocks."""
    from tests.conftest import service_environment

    oauth = services.salesforce.admin.oauth()
    return {
        **service_environment(
            services.database.url, services.redis.url(db=0), services.work_dir / "var"
        ),
        **FAST,
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "SIGHTLINE_AUTO_REPLY_PAUSE_SECONDS": str(size.pause_seconds),
        "SALESFORCE_LOGIN_URL": services.salesforce.instance_url,
        "SALESFORCE_CLIENT_ID": oauth["client_id"],
        "SALESFORCE_CLIENT_SECRET": oauth["client_secret"],
        "SALESFORCE_USERNAME": oauth["username"],
        "SALESFORCE_PASSWORD": oauth["password"],
        "SALESFORCE_SECURITY_TOKEN": oauth["security_token"],
        "REQUESTS_CA_BUNDLE": services.ca_bundle(),
        "LOG_LEVEL": "INFO",
    }


@contextlib.contextmanager
def pointed_at(env: dict[str, str]) -> Iterator[None]:
    """This process's settings, database and Redis clients on the run's services."""
    from config import get_settings
    from core import db as core_db
    from core import redis as core_redis

    def clear() -> None:
        get_settings.cache_clear()
        core_db.reset_for_tests()
        core_redis.get_redis.cache_clear()

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear()


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


# -- the load -------------------------------------------------------------------------------


@dataclass
class Prospect:
    email: str
    sequence: int  # index into the run's sequences
    outcome: str  # reply, auto_reply, bounce, delayed, none
    enrollment_id: int | None = None
    answered: bool = False


@dataclass
class Hit:
    marker: str
    kind: str  # open, click
    started: float
    status: int | None = None
    error: str | None = None
    finished: float = 0.0
    shed: bool = False

    @property
    def acknowledged(self) -> bool:
        return (self.kind == "open" and self.status == 200) or (
            self.kind == "click" and self.status == 302
        )


class Api:
    """Sightline's API v1 on the real `web` process, with one team's token."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"

    def post(self, path: str, body: dict[str, Any], *, accept: tuple[int, ...] = ()) -> Any:
        """POST, retried while the web process cannot answer (Redis restarting, say)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                response = self.session.post(self.base_url + path, json=body, timeout=30)
            except requests.RequestException:
                response = None
            if response is not None and (response.status_code < 500 or time.monotonic() > deadline):
                if response.status_code in (200, 201, *accept):
                    return response.json()
                raise AssertionError(f"POST {path}: {response.status_code} {response.text[:300]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"POST {path}: the web process did not answer")
            time.sleep(0.5)


class Run:
    """One chaos run. `run_chaos` is the entry point."""

    def __init__(
        self,
        services: Services,
        size: Size,
        log_dir: Path,
        *,
        seed: int,
        redis_crash: bool,
        say: Callable[[str], None],
    ) -> None:
        from tests.services import process

        self.services = services
        self.size = size
        self.log_dir = log_dir
        self.rng = random.Random(seed)  # the main thread's: plan, kills
        self.answer_rng = random.Random(seed + 1)
        self.hit_rng = random.Random(seed + 2)
        self.seed = seed
        self.redis_crash = redis_crash
        self.say = say
        self.port = process.free_port()
        self.env = environment(services, size, self.port)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.result = ChaosResult(size=size.name, redis_mode="crash" if redis_crash else "graceful")
        self.stop_load = threading.Event()
        self.errors: list[str] = []
        self.prospects: list[Prospect] = []
        self.sequences: list[dict[str, Any]] = []  # id, team_id, mailbox email
        self.api_tokens: list[str] = []
        self.delivered: dict[str, tuple[str, Prospect, int]] = {}  # rfc id → kind, who, sent
        self.hits: list[Hit] = []
        self.hits_lock = threading.Lock()
        self.redis_down: tuple[float, float] | None = None  # wall clock, crash → back
        self.enrolled = threading.Event()
        self.answered = threading.Event()
        self.hits_done = threading.Event()

    # -- set-up -----------------------------------------------------------------------------

    def seed_teams(self) -> None:
        from web import create_app

        app = create_app({"TESTING": True})
        runner = app.test_cli_runner()
        dovecot, smtp = self.services.dovecot, self.services.smtp
        for team in ("north", "south"):
            result = runner.invoke(
                args=["users", "create", f"owner@{team}.test", "--team", f"Team {team}"]
            )
            if result.exit_code != 0:
                raise AssertionError(result.output)
            token = result.output.strip().splitlines()[-1]
            self.api_tokens.append(token)
            api = Api(self.base_url, token)
            for rep in ("ann", "bob"):
                sender = f"{rep}@{team}-seller.test"
                servers = {
                    "imap": _server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
                    "smtp": _server(smtp.host, smtp.port, sender, smtp.password),
                }
                mailbox = api.post(
                    "/api/v1/mailboxes", {"kind": "imap", "email": sender, **servers}
                )
                sequence = api.post(
                    "/api/v1/sequences",
                    {
                        "name": f"Intro from {rep}",
                        "mailbox_id": mailbox["id"],
                        "steps": [
                            {
                                "delay_seconds": 0,
                                "subject": "Hello {{first_name}}",
                                "body_html": (
                                    "<p>Hi {{first_name}}, a quick question. Our "
                                    f'<a href="{CLICK_URL}">pricing</a>.</p>'
                                ),
                            },
                            {
                                "delay_seconds": self.size.step_delay,
                                "body_html": "<p>Just bumping this.</p>",
                                "same_thread": True,
                            },
                        ],
                    },
                )
                self.sequences.append(
                    {"id": sequence["id"], "api": api, "sender": sender, "team": team}
                )

    def plan(self) -> None:
        size = self.size
        outcomes = (
            ["reply"] * size.replies
            + ["auto_reply"] * size.auto_replies
            + ["bounce"] * size.hard_bounces
            + ["delayed"] * size.delays
        )
        outcomes += ["none"] * (size.enrollments - len(outcomes))
        self.rng.shuffle(outcomes)
        admin = self.services.salesforce.admin
        for n, outcome in enumerate(outcomes):
            sequence = n % len(self.sequences)
            team = self.sequences[sequence]["team"]
            email = f"p{n}@{team}-prospect{n % 7}.test"
            self.prospects.append(Prospect(email=email, sequence=sequence, outcome=outcome))
            if n % 5 == 4:
                admin.add_lead(email)
            else:
                admin.add_contact(email)

    def start_stack(self) -> Any:
        from tests.stack import Stack

        stack = Stack(self.env, self.log_dir)
        stack.commands["worker-2"] = stack.commands["worker"]
        if self.size.events_keep_name:
            stack.commands["events"] = ["env", "DYNO=events.1", *stack.commands["events"]]
        stack.start(*PROCESSES)
        stack.wait_for("the web process", self._web_answers, timeout=90, interval=0.5)
        return stack

    def _web_answers(self) -> bool:
        try:
            return requests.get(self.base_url + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def arm_faults(self) -> None:
        from tests.fakes.salesforce import FAULT_KINDS

        admin = self.services.salesforce.admin
        for kind in FAULT_KINDS:  # every kind at least once, then 10 % at random
            seconds = 3.0 if kind in ("latency", "commit_then_hang") else None
            options: dict[str, Any] = {"skip": self.rng.randrange(0, self.size.fault_skip)}
            if seconds is not None:
                options["seconds"] = seconds
            admin.add_fault(kind, 1, **options)
        admin.fault_rate(0.10, kinds=list(FAULT_KINDS), seed=self.seed, seconds=3.0)

    # -- load threads -------------------------------------------------------------------------

    def enroll_all(self) -> None:
        started = time.monotonic()
        spacing = self.size.enroll_seconds / max(1, len(self.prospects))
        for n, prospect in enumerate(self.prospects):
            if self.stop_load.is_set():
                return
            _sleep_until(started + n * spacing, self.stop_load)
            sequence = self.sequences[prospect.sequence]
            body = {"sequence_id": sequence["id"], "email": prospect.email, "name": f"Pat {n}"}
            answer = sequence["api"].post("/api/v1/enrollments", body, accept=(422,))
            if "id" in answer:
                prospect.enrollment_id = int(answer["id"])
            else:  # the first POST got through before its answer was lost
                prospect.enrollment_id = self._enrollment_of(prospect.email)
        self.enrolled.set()

    def _enrollment_of(self, email: str) -> int:
        from core.db import session_scope
        from core.models import Enrollment
        from core.models import Prospect as ProspectRow

        with session_scope() as session:
            return int(
                session.scalars(
                    select(Enrollment.id)
                    .join(ProspectRow, ProspectRow.id == Enrollment.prospect_id)
                    .where(ProspectRow.email == email)
                ).one()
            )

    def answer_all(self) -> None:
        """Answer step 1 for every prospect whose plan says so, a few seconds after it went out."""
        from core.db import session_scope
        from core.models import SendStatus, SentMessage

        waiting = {p.email: p for p in self.prospects if p.outcome != "none"}
        due: list[tuple[float, Prospect, int, str, str]] = []
        scheduled: set[str] = set()
        while waiting and not self.stop_load.is_set():
            with session_scope() as session:
                rows = session.execute(
                    select(SentMessage.id, SentMessage.message_id, SentMessage.to_addrs)
                    .where(
                        SentMessage.step_position == 0,
                        SentMessage.status == SendStatus.SENT,
                    )
                    .order_by(SentMessage.id)
                ).all()
            for sent_id, message_id, to_addrs in rows:
                email = to_addrs[0]
                if email in waiting and email not in scheduled:
                    scheduled.add(email)
                    at = time.monotonic() + self.answer_rng.uniform(0.5, 6.0)
                    due.append((at, waiting[email], int(sent_id), message_id, email))
            due.sort(key=lambda d: d[0])
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, prospect, sent_id, message_id, email = due.pop(0)
                try:
                    self._answer(prospect, sent_id, message_id)
                except (smtplib.SMTPException, OSError) as exc:
                    self.errors.append(f"answer to {email} not delivered yet: {exc!r}")
                    due.append((now + 1.0, prospect, sent_id, message_id, email))
                    continue
                del waiting[email]
            time.sleep(0.3)
        self.answered.set()

    def _answer(self, prospect: Prospect, sent_id: int, message_id: str) -> None:
        from tests.integration.test_signals import delay_notice, hard_bounce, out_of_office

        sender = self.sequences[prospect.sequence]["sender"]
        original = _original(message_id, sender, prospect.email)
        smtp, dovecot = self.services.smtp, self.services.dovecot
        if prospect.outcome == "reply":
            raw = _reply(message_id, prospect.email, sender)
            with smtp.connect(login=prospect.email) as client:
                client.sendmail(prospect.email, [sender], raw)
        elif prospect.outcome == "auto_reply":
            raw = out_of_office(message_id, prospect.email, sender, "I am out of the office.")
            with smtp.connect(login=prospect.email) as client:
                client.sendmail(prospect.email, [sender], raw)
        elif prospect.outcome == "bounce":
            raw = hard_bounce(original, sender, prospect.email)
            dovecot.deliver(sender, raw, mail_from="")
        else:
            raw = delay_notice(original, sender, prospect.email)
            dovecot.deliver(sender, raw, mail_from="")
        self.delivered[_message_id_of(raw)] = (prospect.outcome, prospect, sent_id)
        prospect.answered = True

    def hit_all(self, threads: int = 8) -> None:
        """Pixel and click requests on sent messages, paced over the run, from many threads."""
        from core.db import session_scope
        from core.models import SendStatus, SentMessage
        from core.tracking.tokens import click_token, open_token

        work: queue.Queue[tuple[Hit, str, str] | None] = queue.Queue(maxsize=200)
        workers = [
            threading.Thread(target=self._hitter, args=(work,), daemon=True, name=f"hitter-{n}")
            for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        total = self.size.hits
        # Paced so the hits spread over the whole load, never more than one a
        # second per message (a reader's rate, far below the rate limit).
        seconds = self.size.enroll_seconds + self.size.step_delay + 2 * self.size.pause_seconds
        rate = total / seconds
        per_message: Counter[int] = Counter()
        sent: list[tuple[int, int, int]] = []
        refreshed = 0.0
        started = time.monotonic()
        made = 0
        try:
            while made < total and not self.stop_load.is_set():
                now = time.monotonic()
                if now - refreshed > 1.0:
                    refreshed = now
                    with session_scope() as session:
                        sent = [
                            (int(i), int(t), int(at.timestamp()))
                            for i, t, at in session.execute(
                                select(
                                    SentMessage.id, SentMessage.team_id, SentMessage.sent_at
                                ).where(SentMessage.status == SendStatus.SENT)
                            )
                            if at is not None
                        ]
                allowed = min(total, int((now - started) * rate) + 1, len(sent) * 40)
                while made < allowed:
                    sent_id, team_id, issued = self.hit_rng.choice(sent)
                    if per_message[sent_id] >= 40:
                        break
                    per_message[sent_id] += 1
                    made += 1
                    marker = f"{MARKER}{made}"
                    if self.hit_rng.random() < 0.2:
                        token = click_token(sent_id, team_id, 0, issued, 0, CLICK_URL)
                        hit = Hit(marker, "click", time.time())
                        path = f"/c/{token}"
                    else:
                        token = open_token(sent_id, team_id, 0, issued)
                        hit = Hit(marker, "open", time.time())
                        path = f"/o/{token}.gif"
                    ip = f"198.51.100.{self.hit_rng.randrange(1, 255)}"
                    with self.hits_lock:
                        self.hits.append(hit)
                    work.put((hit, path, ip))
                time.sleep(0.02)
        finally:
            for _ in workers:
                work.put(None)
            for worker in workers:
                worker.join(timeout=60)
            self.hits_done.set()

    def _hitter(self, work: queue.Queue[tuple[Hit, str, str] | None]) -> None:
        connection: http.client.HTTPConnection | None = None
        while (item := work.get()) is not None:
            hit, path, ip = item
            hit.started = time.time()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                user_agent = (
                    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 "
                    f"(KHTML, like Gecko) Version/18.1 Safari/605.1.15 {hit.marker}"
                )
                connection.request(
                    "GET", path, headers={"User-Agent": user_agent, "X-Forwarded-For": ip}
                )
                response = connection.getresponse()
                response.read()
                hit.status = response.status
                hit.shed = response.getheader("X-Sightline-Hit") == "shed"
            except (OSError, http.client.HTTPException) as exc:
                hit.error = type(exc).__name__
                if connection is not None:
                    connection.close()
                connection = None
            hit.finished = time.time()

    # -- chaos ------------------------------------------------------------------------------

    def restart_redis(self) -> None:
        began = time.time()
        self.services.redis.restart(crash=self.redis_crash)
        self.redis_down = (began, time.time())
        self.result.redis_down_seconds = self.redis_down[1] - began

    def run(self) -> ChaosResult:
        started = time.monotonic()
        self.say(f"chaos ({self.size.name}): setting up (web on port {self.port})")
        migrate()
        stack = self.start_stack()
        try:
            self.seed_teams()
            self.plan()
            self.arm_faults()
            self.say(
                f"chaos: {len(self.prospects)} enrolments, {self.size.hits} hits; faults on, "
                "killing processes"
            )
            loaders = [
                threading.Thread(target=self._guard(self.enroll_all), name="enroll", daemon=True),
                threading.Thread(target=self._guard(self.answer_all), name="answer", daemon=True),
                threading.Thread(target=self._guard(self.hit_all), name="hits", daemon=True),
            ]
            for thread in loaders:
                thread.start()
            load_started = time.monotonic()
            load_estimate = self.size.enroll_seconds + self.size.step_delay
            redis_at = load_started + 0.45 * load_estimate
            # Crash mode: the consumer is down for the seconds before the crash, so the
            # hits of the last fsync window live only in Redis (else it drains them
            # within a second and the window could never show).
            pause_events_at = redis_at - 4.0 if self.redis_crash else 0.0
            limit_at = load_started + 0.3 * load_estimate
            next_kill = load_started + self.rng.uniform(*self.size.kill_every)
            forced = list(KILLABLE)
            self.rng.shuffle(forced)
            loading = (self.enrolled, self.answered, self.hits_done)
            while not all(done.is_set() for done in loading):
                now = time.monotonic()
                self._watch(stack)
                if pause_events_at and now >= pause_events_at:
                    pause_events_at = 0.0
                    stack.kill("events")
                    self.result.kills["events"] += 1
                if redis_at and now >= redis_at:
                    redis_at = 0.0
                    self.restart_redis()
                    self.say(f"chaos: redis {'crashed' if self.redis_crash else 'restarted'}")
                    if "events" not in stack.running:
                        stack.start("events")
                if limit_at and now >= limit_at:
                    limit_at = 0.0
                    self.services.salesforce.admin.add_fault(
                        "request_limit_exceeded", None, duration=self.size.limit_exceeded_seconds
                    )
                if now >= next_kill:
                    victim = forced.pop() if forced else self.rng.choice(KILLABLE)
                    if victim in stack.running:
                        stack.restart(victim)  # SIGKILL the process group, then a fresh one
                        self.result.kills[victim] += 1
                    next_kill = now + self.rng.uniform(*self.size.kill_every)
                if self.errors and self.errors[-1].startswith("fatal"):
                    raise AssertionError(self.errors[-1])
                if now - load_started > self.size.drain_timeout + load_estimate:
                    raise AssertionError("the load did not finish: " + "; ".join(self.errors[-5:]))
                time.sleep(0.1)
            self.say("chaos: load done, draining")
            deadline = time.monotonic() + self.size.drain_timeout
            next_report = time.monotonic() + 15
            while left := self._unsettled():
                self._watch(stack)
                if time.monotonic() > deadline:
                    self.result.problems.append(f"did not settle: {'; '.join(left)}")
                    break
                if time.monotonic() > next_report:
                    self.say(f"chaos: draining: {'; '.join(left)}")
                    next_report = time.monotonic() + 15
                time.sleep(1.0)
            admin = self.services.salesforce.admin
            self.result.faults = Counter(kind for kind, _, _ in admin.fired_faults())
            admin.clear_faults()
            self.result.api_calls = admin.api_usage()[0]
        finally:
            self.stop_load.set()
            stack.stop()
        self.result.seconds = time.monotonic() - started
        self.check()
        self.result.secrets_in_logs = scan_logs(self.log_dir, self.secrets())
        return self.result

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:
                self.errors.append(f"fatal: {target.__name__}: {exc!r}")
                raise

        return guarded

    def _watch(self, stack: Any) -> None:
        """A process that died without being killed is noted and started again."""
        for name, proc in list(stack.running.items()):
            if proc.poll() is not None:
                self.result.unexpected_exits.append(f"{name} exited {proc.returncode}")
                self.say(f"chaos: {name} exited on its own ({proc.returncode}); restarting")
                stack.running.pop(name)
                stack.start(name)

    # -- drain ------------------------------------------------------------------------------

    def settled(self) -> bool:
        return not self._unsettled()

    def _unsettled(self) -> list[str]:
        from sqlalchemy import func

        from core.db import session_scope
        from core.models import (
            Enrollment,
            EnrollmentState,
            InboundMessage,
            OutboxStatus,
            SalesforceOutbox,
            SendStatus,
            SentMessage,
        )
        from core.redis import get_redis
        from core.tracking import hits as hit_stream

        left = []
        with session_scope() as session:
            live = session.scalar(
                select(func.count())
                .select_from(Enrollment)
                .where(Enrollment.state.in_([EnrollmentState.ACTIVE, EnrollmentState.PAUSED]))
            )
            sending = session.scalar(
                select(func.count())
                .select_from(SentMessage)
                .where(SentMessage.status == SendStatus.SENDING)
            )
            recorded = set(
                session.scalars(
                    select(InboundMessage.rfc_message_id).where(
                        InboundMessage.rfc_message_id.in_(list(self.delivered))
                    )
                )
            )
            outbox = session.scalar(
                select(func.count())
                .select_from(SalesforceOutbox)
                .where(SalesforceOutbox.status.not_in([OutboxStatus.DONE, OutboxStatus.FAILED]))
            )
        if live:
            left.append(f"{live} enrolments active or paused")
        if sending:
            left.append(f"{sending} sends being handed over")
        if len(recorded) < len(self.delivered):
            left.append(f"{len(self.delivered) - len(recorded)} answers not recorded")
        if outbox:
            left.append(f"{outbox} Salesforce rows to write")
        try:
            client = get_redis()
            length = client.xlen(hit_stream.STREAM)
            pending = client.xpending(hit_stream.STREAM, hit_stream.GROUP)["pending"]
        except redis.RedisError as exc:
            left.append(f"redis: {exc!r}")
        else:
            if length or pending:
                left.append(f"{length} hits in the stream ({pending} pending)")
        return left

    def state(self) -> str:
        return "; ".join(self._unsettled()) or "settled"

    # -- checks -----------------------------------------------------------------------------

    def check(self) -> None:
        self._check_hits()
        self._check_answers_and_enrollments()
        self._check_salesforce()

    def _check_hits(self) -> None:
        from sqlalchemy import func

        from core.db import session_scope
        from core.models import TrackingHit
        from core.redis import get_redis

        result = self.result
        with session_scope() as session:
            rows = {
                str(ua).rpartition(" ")[2]: int(n)
                for ua, n in session.execute(
                    select(TrackingHit.user_agent, func.count())
                    .where(TrackingHit.user_agent.like(f"%{MARKER}%"))
                    .group_by(TrackingHit.user_agent)
                )
            }
        crash_at = self.redis_down[0] if self.redis_down and self.redis_crash else None
        result.hits_sent = len(self.hits)
        for hit in self.hits:
            stored = rows.get(hit.marker, 0)
            result.hits_duplicated += max(0, stored - 1)
            if hit.shed:
                result.hits_shed += 1
            if not hit.acknowledged:
                result.hits_refused[hit.error or f"http {hit.status}"] += 1
                result.hits_recorded_unacknowledged += stored > 0
                continue
            result.hits_acknowledged += 1
            if stored == 0 and not hit.shed:
                result.hits_lost += 1
                if crash_at is not None and 0 <= crash_at - hit.finished <= FSYNC_WINDOW_SECONDS:
                    result.hits_lost_in_fsync_window += 1
                    result.fsync_loss_oldest = max(
                        result.fsync_loss_oldest, crash_at - hit.finished
                    )
                elif len(result.problems) < 200:
                    result.problems.append(
                        f"hit {hit.marker} ({hit.kind}) acknowledged at {hit.finished:.3f} "
                        "is not recorded"
                    )
        shed = get_redis().hgetall("sightline:tracking:shed")
        result.hits_shed = max(result.hits_shed, sum(int(v) for v in shed.values()))

    def _check_answers_and_enrollments(self) -> None:
        from core.db import session_scope
        from core.models import (
            Enrollment,
            EnrollmentTransition,
            Event,
            InboundMessage,
            SendStatus,
            SentMessage,
        )

        result = self.result
        with session_scope() as session:
            enrollments = {
                int(e.id): (str(e.state), int(e.steps_sent))
                for e in session.scalars(select(Enrollment))
            }
            transitions: dict[int, list[tuple[datetime, str, str]]] = defaultdict(list)
            ordered = select(EnrollmentTransition).order_by(EnrollmentTransition.id)
            for t in session.scalars(ordered):
                transitions[int(t.enrollment_id)].append((t.at, str(t.from_state), str(t.to_state)))
            sents = [
                (
                    int(s.id),
                    s.enrollment_id,
                    s.step_position,
                    str(s.status),
                    s.claimed_at,
                    s.sent_at,
                    s.message_id,
                    list(s.to_addrs),
                    int(s.mailbox_id),
                )
                for s in session.scalars(select(SentMessage))
            ]
            inbound = {
                str(m.rfc_message_id): (int(m.id), m.sent_message_id, bool(m.quarantined))
                for m in session.scalars(select(InboundMessage))
                if m.rfc_message_id
            }
            result.quarantined = sum(1 for _, _, q in inbound.values() if q)
            events_by_inbound: Counter[int] = Counter()
            signal_at: dict[int, list[tuple[str, datetime]]] = defaultdict(list)
            answered = select(Event).where(Event.inbound_message_id.is_not(None))
            for event in session.scalars(answered):
                events_by_inbound[int(event.inbound_message_id or 0)] += 1
                if event.enrollment_id is not None:
                    signal_at[int(event.enrollment_id)].append((str(event.kind), event.created_at))
        expected_signal = {
            "reply": "reply",
            "auto_reply": "auto_reply",
            "bounce": "bounce",
            "delayed": "delayed",
        }
        for rfc_id, (outcome, prospect, sent_id) in self.delivered.items():
            result.delivered[outcome] += 1
            found = inbound.get(rfc_id)
            if found is None or found[2]:
                result.answers_lost += 1
                result.problems.append(
                    f"{outcome} {rfc_id} to sent {sent_id} ({prospect.email}) "
                    + ("quarantined" if found else "not recorded")
                )
                continue
            inbound_id, matched_sent, _ = found
            kinds = [k for k, _ in signal_at.get(prospect.enrollment_id or 0, [])]
            if matched_sent == sent_id and expected_signal[outcome] in kinds:
                result.matched[outcome] += 1
            else:
                result.answers_lost += 1
                result.problems.append(
                    f"{outcome} {rfc_id} matched sent {matched_sent} (expected {sent_id}), "
                    f"signals {kinds}"
                )
            result.answers_duplicated += max(0, events_by_inbound[inbound_id] - 1)

        # Sends: each (enrolment, step) sent once, and each Message-ID delivered once.
        per_step: Counter[tuple[int, int]] = Counter()
        for _, enrollment_id, step, status, *_ in sents:
            if status == SendStatus.SENT and enrollment_id is not None and step is not None:
                per_step[(int(enrollment_id), int(step))] += 1
                result.sends[int(step) + 1] += 1
        senders = {s["sender"] for s in self.sequences}
        smtp_copies = Counter(
            e.message_id for e in self.services.smtp.sent_log() if e.mail_from in senders
        )
        result.sends_duplicated = sum(n - 1 for n in per_step.values() if n > 1) + sum(
            n - 1 for n in smtp_copies.values() if n > 1
        )
        for message_id, n in smtp_copies.items():
            if n > 1:
                result.problems.append(f"{message_id} went out through SMTP {n} times")

        # Enrolments: halted exactly as their answer demands.
        for prospect in self.prospects:
            eid = prospect.enrollment_id
            if eid is None or eid not in enrollments:
                result.wrong_halts += 1
                result.problems.append(f"{prospect.email}: never enrolled")
                continue
            state, steps_sent = enrollments[eid]
            result.states[state] += 1
            history = transitions.get(eid, [])
            if any(to == "paused" for _, _, to in history) and state == "finished":
                result.paused_and_resumed += 1
            wrong = self._wrong_halt(
                prospect, state, steps_sent, history, signal_at.get(eid, []), sents
            )
            if wrong:
                result.wrong_halts += 1
                result.problems.append(f"{prospect.email} (enrolment {eid}): {wrong}")

    def _wrong_halt(
        self,
        prospect: Prospect,
        state: str,
        steps_sent: int,
        history: list[tuple[datetime, str, str]],
        signals: list[tuple[str, datetime]],
        sents: list[tuple[Any, ...]],
    ) -> str | None:
        """Why this enrolment did not end as its answer demands, or None."""
        mine = [s for s in sents if s[1] == prospect.enrollment_id]
        halting = [at for kind, at in signals if kind in ("reply", "bounce")]
        if halting:
            recorded = min(halting)
            after = [s for s in mine if s[3] == "sent" and s[4] > recorded]
            if after:
                return f"step {after[0][2] + 1} claimed after the {prospect.outcome} was recorded"
            in_window = [s for s in mine if s[3] == "sent" and s[5] and s[5] > recorded]
            self.result.handover_window += len(in_window)
            finished_before = any(to == "finished" and at <= recorded for at, _, to in history)
            if finished_before:
                self.result.halted_after_last_step[prospect.outcome] += 1
            want = {"reply": "replied", "bounce": "bounced"}.get(prospect.outcome)
            if want and not finished_before and state != want:
                return f"{prospect.outcome} recorded while live, yet the enrolment is {state}"
            if want is None:
                return f"halted by a {prospect.outcome}"
            return None
        if prospect.outcome in ("reply", "bounce"):
            return f"its {prospect.outcome} never halted it (state {state})"
        if state != "finished" or steps_sent != 2:
            return f"expected finished after 2 steps, is {state} after {steps_sent}"
        if prospect.outcome == "auto_reply" and not any(k == "auto_reply" for k, _ in signals):
            return "its out-of-office was not recorded"
        return None

    def _check_salesforce(self) -> None:
        from core.db import session_scope
        from core.models import (
            Event,
            OutboxStatus,
            SalesforceEngagement,
            SalesforceOutbox,
            SendStatus,
            SentMessage,
        )
        from worker.salesforce.engagement import sent_task_key
        from worker.salesforce.outbox import task_key

        result = self.result
        with session_scope() as session:
            rows = [
                (str(r.key), str(r.kind), str(r.status), r.last_error)
                for r in session.scalars(select(SalesforceOutbox))
            ]
            sent_ids = [
                int(i)
                for i in session.scalars(
                    select(SentMessage.id).where(SentMessage.status == SendStatus.SENT)
                )
            ]
            halting = Counter(
                str(k)
                for k in session.scalars(
                    select(Event.kind).where(Event.kind.in_(["reply", "bounce"]))
                )
            )
            engagement = {
                int(e.sent_message_id): (int(e.opens), int(e.clicks))
                for e in session.scalars(select(SalesforceEngagement))
            }
        kinds = Counter(kind for _, kind, _, _ in rows)
        for kind, wanted in (
            ("task_sent", len(sent_ids)),
            ("task_reply", halting["reply"]),
            ("task_bounce", halting["bounce"]),
        ):
            if kinds[kind] != wanted:
                result.tasks_missing += abs(wanted - kinds[kind])
                result.problems.append(f"{wanted} {kind} owed, {kinds[kind]} outbox rows")
        expected: set[str] = set()
        for key, kind, status, error in rows:
            if kind == "task_engagement":
                continue
            if status == OutboxStatus.FAILED:
                result.dead_letters.append(f"{key}: {error}")
                continue
            expected.add(task_key(key))
            if status != OutboxStatus.DONE:
                result.problems.append(f"outbox {key} left {status}: {error}")
        tasks = self.services.salesforce.admin.tasks()
        keys = Counter(str(t.get("Sightline_Key__c")) for t in tasks)
        result.tasks_expected = len(expected)
        result.tasks_in_org = len(tasks)
        result.tasks_missing += len(expected - set(keys))
        result.tasks_duplicated = sum(n - 1 for n in keys.values() if n > 1)
        for key in sorted(expected - set(keys))[:20]:
            result.problems.append(f"no Task for {key}")
        by_key = {str(t.get("Sightline_Key__c")): t for t in tasks}
        for sent_id in sent_ids:
            task = by_key.get(task_key(sent_task_key(sent_id)))
            if task is None:
                continue
            opens, clicks = engagement.get(sent_id, (0, 0))
            got = (
                int(task.get("Sightline_Opens__c") or 0),
                int(task.get("Sightline_Clicks__c") or 0),
            )
            if got != (opens, clicks):
                result.engagement_mismatches += 1
                if result.engagement_mismatches <= 10:
                    result.problems.append(
                        f"sent {sent_id}: Task counts opens/clicks {got}, "
                        f"Sightline {(opens, clicks)}"
                    )

    def secrets(self) -> dict[str, str]:
        """Every secret this run handed to a process, by name."""
        env = self.env
        found = {
            "SECRET_KEY": env["SECRET_KEY"],
            "SIGHTLINE_ENCRYPTION_KEY": env["SIGHTLINE_ENCRYPTION_KEY"],
            "SALESFORCE_PASSWORD": env["SALESFORCE_PASSWORD"],
            "SALESFORCE_SECURITY_TOKEN": env["SALESFORCE_SECURITY_TOKEN"],
            "SALESFORCE_CLIENT_SECRET": env["SALESFORCE_CLIENT_SECRET"],
            "mailbox password": self.services.dovecot.password,
        }
        for n, token in enumerate(self.api_tokens):
            found[f"API token {n + 1}"] = token
        with contextlib.suppress(Exception):
            found["Salesforce access token"] = self.services.salesforce.admin.access_token()
        return found


def scan_logs(log_dir: Path, secrets: dict[str, str]) -> list[str]:
    """`<file>:<line> <secret name>` for every line of every log that holds a secret."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name, value in secrets.items():
                if value and len(value) >= 6 and value in line:
                    found.append(f"{path.name}:{number} {name}")
    return found


# -- mail -----------------------------------------------------------------------------------


def _server(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    return {"host": host, "port": port, "username": user, "password": password, "security": "none"}


def _original(message_id: str, sender: str, prospect: str) -> bytes:
    """The headers of what we sent, as a bounce report attaches them."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = prospect
    msg["Subject"] = "Hello Pat"
    msg["Message-ID"] = message_id
    msg.set_content("Hi Pat, a quick question.")
    return bytes(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))


def _reply(message_id: str, author: str, sender: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = sender
    msg["Subject"] = "Re: Hello Pat"
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg.set_content("Yes, happy to talk on Tuesday.\n\n> Hi Pat, a quick question.\n")
    return bytes(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))


def _message_id_of(raw: bytes) -> str:
    from email import message_from_bytes

    from worker.matching.msgid import normalize_msgid

    found = normalize_msgid(str(message_from_bytes(raw).get("Message-ID", "")))
    if found is None:
        raise AssertionError("an answer without a Message-ID")
    return found


def _sleep_until(when: float, stop: threading.Event) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        stop.wait(delay)


# -- entry point ----------------------------------------------------------------------------


def run_chaos(
    size: Size,
    *,
    seed: int = 9,
    redis_crash: bool = False,
    work_dir: Path | None = None,
    dovecot: Any = None,
    smtp: Any = None,
    say: Callable[[str], None] = print,
) -> ChaosResult:
    """Start the services, run the storm, check everything; the result holds every number."""
    work_dir = work_dir or Path(tempfile.mkdtemp(prefix="sightline-chaos-"))
    services = Services(work_dir, dovecot=dovecot, smtp=smtp).start()
    try:
        run = Run(
            services,
            size,
            work_dir / "logs",
            seed=seed,
            redis_crash=redis_crash,
            say=say,
        )
        with pointed_at(run.env):
            return run.run()
    finally:
        services.stop()
