"""The chaos run: sends, replies, bounces and tracking hits through real parts while they fail.

What it drives (full size; `CI` is the short form `make test` runs):

    685 enrolments in four 2-step sequences (two teams, two IMAP mailboxes each)
      → ~1,000 sends through the real SMTP server into Dovecot
    300 replies, 100 out-of-offices (SMTP), 70 hard bounces, 30 delay notices (LMTP)
      to step 1, each a few seconds after it arrived
    10,000 pixel and click hits on the real `web` process (gunicorn + uvicorn)

through the real services and every Procfile process (`tests.chaos.services`),
while processes are SIGKILLed, Redis is restarted and Salesforce fails
(`tests.chaos.faults`; every fault transient). The load (`tests.chaos.load`)
acts from outside and keeps its own ledger (`tests.chaos.ledger`) of what it
enrolled, what the SMTP server delivered, what it answered and which hits were
acknowledged. Then it drains (no more kills; faults stay on) and checks the
product against the state derived from that ledger alone (`tests.chaos.checks`).

The last line (`tests.chaos.result`):

    chaos: lost 0, duplicated 0, missing tasks 0, wrong halts 0, dead letters 0, shed 0,
           strangers 0
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import func, select

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
from tests.chaos import checks
from tests.chaos.faults import Storm, arm_salesforce
from tests.chaos.ledger import DeliveryWatcher, Ledger
from tests.chaos.load import Load, Plan, plan_prospects, seed_teams
from tests.chaos.result import ChaosResult
from tests.chaos.services import (
    Services,
    environment,
    migrate,
    pointed_at,
    scan_logs,
    start_stack,
    watch,
)
from tests.services import process


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
    # True: a killed `events` comes back under its old consumer name (see
    # `services.start_stack`); False: as a new consumer.
    events_keep_name: bool

    def plan(self) -> Plan:
        return Plan(
            hits=self.hits,
            enrollments=self.enrollments,
            replies=self.replies,
            auto_replies=self.auto_replies,
            hard_bounces=self.hard_bounces,
            delays=self.delays,
            step_delay=self.step_delay,
            enroll_seconds=self.enroll_seconds,
            hit_seconds=self.enroll_seconds + self.step_delay + 2 * self.pause_seconds,
        )


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
        self.services = services
        self.size = size
        self.log_dir = log_dir
        self.rng = random.Random(seed)  # the main thread's: plan, kills
        self.seed = seed
        self.redis_crash = redis_crash
        self.say = say
        self.port = process.free_port()
        self.env = environment(services, size.pause_seconds, self.port)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.result = ChaosResult(size=size.name, redis_mode="crash" if redis_crash else "graceful")
        self.ledger = Ledger()
        self.stop_load = threading.Event()
        self.api_tokens: list[str] = []

    def run(self) -> ChaosResult:
        started = time.monotonic()
        self.say(f"chaos ({self.size.name}): setting up (web on port {self.port})")
        migrate()
        stack = start_stack(self.env, self.log_dir, self.base_url, self.size.events_keep_name)
        storm: Storm | None = None
        watcher: DeliveryWatcher | None = None
        following: threading.Thread | None = None
        try:
            sequences, self.api_tokens = seed_teams(
                self.base_url, self.services, self.size.step_delay
            )
            admin = self.services.salesforce.admin
            self.ledger.prospects = plan_prospects(self.size.plan(), sequences, admin, self.rng)
            arm_salesforce(admin, self.rng, self.size.fault_skip, self.seed)
            sellers = {s["sender"] for s in sequences}
            watcher = DeliveryWatcher(
                self.ledger, self.services.smtp, self.services.dovecot, sellers
            )
            load = Load(
                self.size.plan(),
                self.ledger,
                self.services,
                sequences,
                self.port,
                self.seed,
                self.stop_load,
            )
            self.say(
                f"chaos: {len(self.ledger.prospects)} enrolments, {self.size.hits} hits; "
                "faults on, killing processes"
            )
            done = [threading.Event() for _ in range(3)]
            bodies = (load.enroll_all, load.answer_all, load.hit_all)
            threads = [
                threading.Thread(target=load.guard(body, flag), name=body.__name__, daemon=True)
                for body, flag in zip(bodies, done, strict=True)
            ]
            following = threading.Thread(
                target=watcher.follow, args=(self.stop_load,), name="deliveries", daemon=True
            )
            threads.append(following)
            for thread in threads:
                thread.start()
            load_started = time.monotonic()
            load_estimate = self.size.enroll_seconds + self.size.step_delay
            storm = Storm(
                services=self.services,
                stack=stack,
                rng=self.rng,
                kill_every=self.size.kill_every,
                limit_seconds=self.size.limit_exceeded_seconds,
                redis_crash=self.redis_crash,
                load_started=load_started,
                load_estimate=load_estimate,
                say=self.say,
            )
            while not all(flag.is_set() for flag in done):
                now = time.monotonic()
                watch(stack, self.result.unexpected_exits, self.say)
                storm.tick(now)
                fatal = [e for e in load.errors if e.startswith("fatal")]
                if fatal:
                    raise AssertionError(fatal[0])
                if now - load_started > self.size.drain_timeout + load_estimate:
                    raise AssertionError("the load did not finish: " + "; ".join(load.errors[-5:]))
                time.sleep(0.1)
            self.say("chaos: load done, draining")
            self.drain(stack)
            self.result.faults = Counter(kind for kind, _, _ in admin.fired_faults())
            admin.clear_faults()
            self.result.api_calls = admin.api_usage()[0]
        finally:
            self.stop_load.set()
            stack.stop()
            if following is not None:
                following.join(timeout=30)
        if storm is not None:
            self.result.kills = storm.kills
            if storm.redis_down is not None:
                self.result.redis_down_seconds = storm.redis_down[1] - storm.redis_down[0]
        if watcher is not None:
            watcher.poll()  # the last deliveries, after every process stopped
            self.result.problems.extend(watcher.problems)
        self.result.seconds = time.monotonic() - started
        crash_at = storm.redis_down[0] if storm and storm.redis_down and self.redis_crash else None
        checks.check_all(self.ledger, self.result, self.services.salesforce.admin, crash_at)
        self.result.secrets_in_logs = scan_logs(self.log_dir, self.secrets())
        return self.result

    def drain(self, stack: Any) -> None:
        """Wait, faults still on and no more kills, until nothing is left to do."""
        deadline = time.monotonic() + self.size.drain_timeout
        next_report = time.monotonic() + 15
        while left := self._unsettled():
            watch(stack, self.result.unexpected_exits, self.say)
            if time.monotonic() > deadline:
                self.result.problems.append(f"did not settle: {'; '.join(left)}")
                return
            if time.monotonic() > next_report:
                self.say(f"chaos: draining: {'; '.join(left)}")
                next_report = time.monotonic() + 15
            time.sleep(1.0)

    def _unsettled(self) -> list[str]:
        """What the product has yet to do (its own view: this only decides when to stop)."""
        left = []
        answers = [a.rfc_id for a in self.ledger.answers.values()]
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
                        InboundMessage.rfc_message_id.in_(answers)
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
        if len(recorded) < len(answers):
            left.append(f"{len(answers) - len(recorded)} answers not recorded")
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
        try:
            found["Salesforce access token"] = self.services.salesforce.admin.access_token()
        except Exception as exc:  # noqa: BLE001 - the org is already stopped: nothing to find
            self.say(f"chaos: the org's access token could not be read ({exc!r})")
        return found


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
        run = Run(services, size, work_dir / "logs", seed=seed, redis_crash=redis_crash, say=say)
        with pointed_at(run.env):
            return run.run()
    finally:
        services.stop()
