"""The chaos run's load: the sellers, their prospects and the prospects' browsers.

Everything here acts from outside, as those parties would, and writes what
it did and saw into the ledger (`tests.chaos.ledger`):

- the sellers: two teams, two IMAP mailboxes each, a 2-step sequence per
  mailbox, made through the API; enrolments through the API, spread over a
  while;
- the prospects: each has a Contact (or, one in five, a Lead) in the org and a
  planned outcome. When the SMTP server delivers step 1, a prospect whose plan
  says so replies or sends an out-of-office (SMTP), or their server answers with
  a hard bounce or a delay notice (LMTP), a few seconds later;
- their browsers: pixel and link requests taken from the delivered emails
  themselves, paced over the run, never sooner than the scanner window after
  delivery, each carrying a unique marker in its User-Agent.
"""

from __future__ import annotations

import http.client
import queue
import random
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import requests
from sqlalchemy import select

from core.db import session_scope
from core.models import Enrollment
from core.models import Prospect as ProspectRow
from tests.chaos.ledger import Answer, Delivery, Hit, Ledger, Prospect
from tests.chaos.services import SCANNER_SECONDS
from tests.integration.test_signals import delay_notice, hard_bounce, out_of_office
from web import create_app
from worker.matching.msgid import normalize_msgid

ANY_TIME = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "00:00",
    "end": "24:00",
}

MARKER = "SightlineChaos/"
CLICK_URL = "https://example.com/pricing?utm=chaos"
HITS_PER_EMAIL = 40  # at most, and never more than one a second: a reader's pace
READ_AFTER_SECONDS = SCANNER_SECONDS + 2.0  # a person opens mail later than a scanner


@dataclass(frozen=True)
class Plan:
    hits: int
    enrollments: int
    replies: int
    auto_replies: int
    hard_bounces: int
    delays: int
    step_delay: int
    enroll_seconds: float
    hit_seconds: float  # the hits are spread over this long


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


def seed_teams(
    base_url: str, services: Any, step_delay: int
) -> tuple[list[dict[str, Any]], list[str]]:
    """Two teams with two IMAP mailboxes and a sequence each: (sequences, API tokens)."""
    app = create_app({"TESTING": True})
    runner = app.test_cli_runner()
    dovecot, smtp = services.dovecot, services.smtp
    sequences: list[dict[str, Any]] = []
    tokens: list[str] = []
    for team in ("north", "south"):
        result = runner.invoke(
            args=[
                "users",
                "create",
                f"owner@{team}.test",
                "--team",
                f"Team {team}",
                "--no-password",
            ]
        )
        if result.exit_code != 0:
            raise AssertionError(result.output)
        token = result.output.strip().splitlines()[-1]
        tokens.append(token)
        api = Api(base_url, token)
        for rep in ("ann", "bob"):
            sender = f"{rep}@{team}-seller.test"
            servers = {
                "imap": _server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
                "smtp": _server(smtp.host, smtp.port, sender, smtp.password),
            }
            mailbox = api.post("/api/v1/mailboxes", {"kind": "imap", "email": sender, **servers})
            sequence = api.post(
                "/api/v1/sequences",
                {
                    "name": f"Intro from {rep}",
                    "mailbox_id": mailbox["id"],
                    # About what is sent, not when: any day, any hour (default Mon-Fri 08-18).
                    "send_window": ANY_TIME,
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
                            "delay_seconds": step_delay,
                            "body_html": "<p>Just bumping this.</p>",
                            "same_thread": True,
                        },
                    ],
                },
            )
            sequences.append({"id": sequence["id"], "api": api, "sender": sender, "team": team})
    return sequences, tokens


def plan_prospects(
    plan: Plan, sequences: list[dict[str, Any]], admin: Any, rng: random.Random
) -> list[Prospect]:
    """Who gets enrolled and how each will answer; their Contacts and Leads made in the org."""
    outcomes = (
        ["reply"] * plan.replies
        + ["auto_reply"] * plan.auto_replies
        + ["bounce"] * plan.hard_bounces
        + ["delayed"] * plan.delays
    )
    outcomes += ["none"] * (plan.enrollments - len(outcomes))
    rng.shuffle(outcomes)
    prospects = []
    for n, outcome in enumerate(outcomes):
        sequence = n % len(sequences)
        email = f"p{n}@{sequences[sequence]['team']}-prospect{n % 7}.test"
        who_id = admin.add_lead(email) if n % 5 == 4 else admin.add_contact(email)
        prospects.append(Prospect(email, sequence, outcome, who_id))
    return prospects


class Load:
    """The three load threads' bodies: enrol, answer, hit. Each stops on `stop`."""

    def __init__(
        self,
        plan: Plan,
        ledger: Ledger,
        services: Any,
        sequences: list[dict[str, Any]],
        port: int,
        seed: int,
        stop: threading.Event,
    ) -> None:
        self.plan = plan
        self.ledger = ledger
        self.services = services
        self.sequences = sequences
        self.port = port
        self.answer_rng = random.Random(seed + 1)
        self.hit_rng = random.Random(seed + 2)
        self.stop = stop
        self.errors: list[str] = []

    def enroll_all(self) -> None:
        started = time.monotonic()
        prospects = self.ledger.prospects
        spacing = self.plan.enroll_seconds / max(1, len(prospects))
        for n, prospect in enumerate(prospects):
            if self.stop.is_set():
                return
            _sleep_until(started + n * spacing, self.stop)
            sequence = self.sequences[prospect.sequence]
            body = {"sequence_id": sequence["id"], "email": prospect.email, "name": f"Pat {n}"}
            answer = sequence["api"].post("/api/v1/enrollments", body, accept=(422,))
            if "id" in answer:
                prospect.enrollment_id = int(answer["id"])
            else:  # the first POST got through before its answer was lost
                prospect.enrollment_id = _enrollment_of(prospect.email)

    def answer_all(self) -> None:
        """Answer each planned prospect's step 1 a few seconds after it was delivered."""
        waiting = {p.email: p for p in self.ledger.prospects if p.outcome != "none"}
        due: list[tuple[float, Prospect, Delivery]] = []
        scheduled: set[str] = set()
        while waiting and not self.stop.is_set():
            for delivery in self.ledger.delivered():
                email = delivery.prospect
                if delivery.step == 1 and email in waiting and email not in scheduled:
                    scheduled.add(email)
                    at = time.monotonic() + self.answer_rng.uniform(0.5, 6.0)
                    due.append((at, waiting[email], delivery))
            due.sort(key=lambda d: d[0])
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, prospect, delivery = due.pop(0)
                try:
                    self._answer(prospect, delivery)
                except (smtplib.SMTPException, OSError) as exc:
                    self.errors.append(f"answer to {prospect.email} not delivered yet: {exc!r}")
                    due.append((now + 1.0, prospect, delivery))
                    continue
                del waiting[prospect.email]
            time.sleep(0.3)

    def _answer(self, prospect: Prospect, delivery: Delivery) -> None:
        sender = delivery.seller
        smtp, dovecot = self.services.smtp, self.services.dovecot
        if prospect.outcome == "reply":
            raw = _reply(delivery.raw_message_id, prospect.email, sender, delivery.subject)
            with smtp.connect(login=prospect.email) as client:
                client.sendmail(prospect.email, [sender], raw)
        elif prospect.outcome == "auto_reply":
            raw = out_of_office(
                delivery.raw_message_id, prospect.email, sender, "I am out of the office."
            )
            with smtp.connect(login=prospect.email) as client:
                client.sendmail(prospect.email, [sender], raw)
        elif prospect.outcome == "bounce":
            raw = hard_bounce(delivery.raw, sender, prospect.email)
            dovecot.deliver(sender, raw, mail_from="")
        else:
            raw = delay_notice(delivery.raw, sender, prospect.email)
            dovecot.deliver(sender, raw, mail_from="")
        rfc_id, subject = _identity_of(raw)
        answer = Answer(rfc_id, prospect.outcome, prospect, delivery, subject, time.time())
        with self.ledger.lock:
            self.ledger.answers[rfc_id] = answer

    def hit_all(self, threads: int = 8) -> None:
        """Pixel and click requests on delivered emails, paced over the run, many threads."""
        work: queue.Queue[tuple[Hit, str, str] | None] = queue.Queue(maxsize=200)
        workers = [
            threading.Thread(target=self._hitter, args=(work,), daemon=True, name=f"hitter-{n}")
            for n in range(threads)
        ]
        for worker in workers:
            worker.start()
        total = self.plan.hits
        rate = total / self.plan.hit_seconds
        per_email: Counter[str] = Counter()
        last_hit: dict[str, float] = {}
        started = time.monotonic()
        made = 0
        try:
            while made < total and not self.stop.is_set():
                now = time.monotonic()
                readable = [
                    d
                    for d in self.ledger.delivered()
                    if time.time() - d.at >= READ_AFTER_SECONDS
                    and per_email[d.message_id] < HITS_PER_EMAIL
                    and now - last_hit.get(d.message_id, 0.0) >= 1.0
                    and (d.open_path if d.role == "open" else d.click_path)
                ]
                allowed = min(total, int((now - started) * rate) + 1)
                while made < allowed and readable:
                    delivery = readable.pop(self.hit_rng.randrange(len(readable)))
                    per_email[delivery.message_id] += 1
                    last_hit[delivery.message_id] = now
                    made += 1
                    hit = Hit(f"{MARKER}{made}", delivery.role, delivery.message_id)
                    path = delivery.click_path if delivery.role == "click" else delivery.open_path
                    ip = f"198.51.100.{self.hit_rng.randrange(1, 255)}"
                    with self.ledger.lock:
                        self.ledger.hits.append(hit)
                    work.put((hit, str(path), ip))
                time.sleep(0.02)
        finally:
            for _ in workers:
                work.put(None)
            for worker in workers:
                worker.join(timeout=60)

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

    def guard(self, target: Callable[[], None], done: threading.Event) -> Callable[[], None]:
        """`target` as a thread body: a crash is a fatal error of the run; `done` is set at exit."""

        def guarded() -> None:
            try:
                target()
            except Exception as exc:
                self.errors.append(f"fatal: {target.__name__}: {exc!r}")
                raise
            finally:
                done.set()

        return guarded


def _enrollment_of(email: str) -> int:
    """The enrolment a POST made whose answer was lost (the prospect is unique to it)."""
    with session_scope() as session:
        return int(
            session.scalars(
                select(Enrollment.id)
                .join(ProspectRow, ProspectRow.id == Enrollment.prospect_id)
                .where(ProspectRow.email == email)
            ).one()
        )


def _server(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    return {"host": host, "port": port, "username": user, "password": password, "security": "none"}


def _reply(message_id: str, author: str, sender: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = sender
    msg["Subject"] = f"Re: {subject}"
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg.set_content("Yes, happy to talk on Tuesday.\n\n> Hi Pat, a quick question.\n")
    return bytes(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))


def _identity_of(raw: bytes) -> tuple[str, str]:
    """(the normalised Message-ID, the Subject) of an answer the harness made."""
    parsed = message_from_bytes(raw)
    found = normalize_msgid(str(parsed.get("Message-ID", "")))
    if found is None:
        raise AssertionError("an answer without a Message-ID")
    return found, str(parsed.get("Subject", ""))


def _sleep_until(when: float, stop: threading.Event) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        stop.wait(delay)
