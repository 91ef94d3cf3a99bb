"""Chromium screenshots of every page, at 1366 and 390 px wide, into artifacts/.

    .venv/bin/python -m scripts.screenshots        (or: make screenshots)

Starts the Procfile's `web` process on a temporary SQLite database and a private
Redis (a unix socket in a temporary folder: nothing shared with tests or `make
run` is touched), fills it with a demo team made through the product's own code
(the CLI, enrolment, the claim and send bookkeeping, `record_event`, the document
upload API and pipeline): a mailbox, a template, a three-step sequence, six
prospects, sent emails with opens, clicks and a reply, a scheduled one-off email,
a PDF in the content library that a prospect then reads in the real viewer. Then
it signs in and captures every HTML page of the URL map a signed-in rep can open
(named after its endpoint), the sign-in page, the 404 page (signed in and out)
and the prospect's document viewer, as `<page>-1366.png` and `<page>-390.png`,
and prints the list. The browser is set to New York time, so the times shown are
converted from UTC.

Options: `--out DIR` (default artifacts/), `--keep` (leave the temporary folder).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pymupdf
import requests
from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from flask import Flask
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright
from sqlalchemy import select, update

from core.crypto import encrypt_json
from core.db import session_scope
from core.documents.tokens import link_token
from core.events import natural_key, record_event
from core.models import (
    Document,
    EmailTemplate,
    Enrollment,
    EnrollmentState,
    Event,
    InboundMessage,
    Mailbox,
    OneOffEmail,
    OneOffStatus,
    Prospect,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    User,
    utcnow,
)
from web import create_app
from worker.documents.jobs import process_document_job
from worker.documents.outgoing import ensure_link
from worker.sequences import claiming, delivering, enrolling
from worker.sync.base import SendResult

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
WIDTHS: dict[int, ViewportSize] = {
    1366: {"width": 1366, "height": 900},
    390: {"width": 390, "height": 844},
}
# The browser's zone: the times on the pages are converted from UTC to it.
TIMEZONE = "America/New_York"
USER = "riley@northwind.example"
PASSWORD = "demo password for screenshots"  # noqa: S105 - a demo account on a throwaway database
PROSPECTS = [  # email, name, company
    ("dana.whitfield@acme-logistics.example", "Dana Whitfield", "Acme Logistics"),
    ("marcus.osei@brightpath.example", "Marcus Osei", "Brightpath"),
    ("priya.raman@helio-health.example", "Priya Raman", "Helio Health"),
    ("tom.becker@corvid.example", "Tom Becker", "Corvid"),
    ("lena.park@fjord-analytics.example", "Lena Park", "Fjord Analytics"),
    ("sam.ortiz@ortiz-and-co.example", "Sam Ortiz", "Ortiz & Co"),
]
PROSPECT_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
# The prospect reaches us from another address than the rep (their reads count as a person's).
PROSPECT_HEADERS = {"X-Forwarded-For": "203.0.113.77"}
# Routes that are not pages a person looks at (JSON, images, downloads, links for prospects).
NOT_PAGES = ("/api/", "/d/", "/static/", "/feed/items", "/feed/messages", "/healthz")
NOT_SHOT = {"auth-signin"}  # taken signed out, as "signin"


def environment(folder: Path, port: int, redis_socket: Path) -> dict[str, str]:
    return {
        "SIGHTLINE_ENV": "development",
        "SIGHTLINE_VAR_DIR": str(folder / "var"),
        "DATABASE_URL": f"sqlite:///{folder / 'demo.db'}",
        "REDIS_URL": f"unix://{redis_socket}",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "WARNING",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], Path]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is missing: run scripts/test-prereqs.sh core")
    socket_path = folder / "redis.sock"
    server = subprocess.Popen(  # noqa: S603
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--save",
            "",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, socket_path


def start_web(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    bin_dir = str(Path(sys.executable).parent)
    with log.open("wb") as out:
        web = subprocess.Popen(  # noqa: S603
            shlex.split(line.partition(":")[2]),
            cwd=ROOT,
            env={**os.environ, **env, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = env["PUBLIC_BASE_URL"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return web
        except requests.RequestException:
            time.sleep(0.2)
    web.terminate()
    sys.exit(f"the web process did not answer in 30 s: see {log}")


def pdf(pages: int) -> bytes:
    """A small pricing deck: a title band, a paragraph and a bar per page."""
    doc = pymupdf.open()  # type: ignore[no-untyped-call]
    for number in range(1, pages + 1):
        page = doc.new_page()
        band = pymupdf.Rect(0, 0, page.rect.width, 110)  # type: ignore[no-untyped-call]
        page.draw_rect(band, fill=(0.12, 0.37, 0.75))
        title = f"Northwind pricing 2027 · {number}/{pages}"
        page.insert_text((56, 70), title, fontsize=26, color=(1, 1, 1))
        for line in range(14):
            text = f"Plan detail {line + 1}: seats, tracking, Salesforce sync, document analytics."
            page.insert_text((56, 170 + line * 18), text, fontsize=11)
        bar = pymupdf.Rect(56, 480, 56 + 90 * number, 640)  # type: ignore[no-untyped-call]
        page.draw_rect(bar, fill=(0.7, 0.8, 1.0))
    data: bytes = doc.tobytes()  # type: ignore[no-untyped-call]
    return data


@dataclass
class Demo:
    """The ids of the demo team's rows, for the pages' addresses."""

    team: int = 0
    mailbox: int = 0
    template: int = 0
    sequence: int = 0
    document: int = 0
    email: int = 0
    link: int = 0
    viewer: str = ""
    # One per prospect, in PROSPECTS order.
    enrollments: list[int] = field(default_factory=list)
    prospects: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        """A value for every URL argument a page has (the first prospect's rows)."""
        return {
            "email_id": self.email,
            "template_id": self.template,
            "sequence_id": self.sequence,
            "enrollment_id": self.enrollments[0],
            "prospect_id": self.prospects[0],
            "mailbox_id": self.mailbox,
            "sent_message_id": self.sent[0],
            "document_id": self.document,
            "link_id": self.link,
            "position": 0,
            "number": 1,
            "width": 800,
            "kind": "gmail",
        }


def create_team_and_deck(app: Flask, demo: Demo) -> None:
    """The rep (through the CLI) and a processed PDF (through the API and the pipeline)."""
    cli = app.test_cli_runner().invoke(
        args=[
            *("users", "create", USER, "--team", "Northwind Sales", "--plan", "team"),
            *("--password", PASSWORD, "--name", "Riley Chen"),
        ]
    )
    if cli.exit_code != 0:
        sys.exit(f"creating the demo user failed: {cli.output}")
    api_token = cli.output.strip().splitlines()[-1]
    upload = app.test_client().post(
        "/api/v1/documents",
        data={"file": (io.BytesIO(pdf(4)), "Northwind pricing 2027.pdf")},
        headers={"Authorization": f"Bearer {api_token}"},
        content_type="multipart/form-data",
    )
    demo.document = int(upload.get_json()["id"])
    if process_document_job(demo.document) != "ready":
        sys.exit("the demo document did not process")


def create_sequence(demo: Demo) -> None:
    """A mailbox, a template, a three-step sequence and six prospects enrolled in it."""
    now = utcnow()
    with session_scope() as session:
        team = session.scalars(select(Team)).one()
        user = session.scalars(select(User)).one()
        mailbox = Mailbox(
            team_id=team.id,
            user_id=user.id,
            kind="imap",
            email=USER,
            credentials_encrypted=encrypt_json({}),
            last_synced_at=now - timedelta(minutes=3),
        )
        session.add(mailbox)
        session.flush()
        template = EmailTemplate(
            team_id=team.id,
            name="Intro: tracking for Salesforce teams",
            subject="Quick question, {{first_name}}",
            body_html=(
                "<p>Hi {{first_name}},</p><p>Is {{company}} still logging email activity in "
                "Salesforce by hand? We track opens, clicks and replies and write them to the "
                "right Contact.</p><p>Worth 15 minutes next week?</p><p>{{sender_name}}</p>"
            ),
        )
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Q1 outbound: VP Sales")
        sequence.steps = [
            SequenceStep(
                position=0, delay_seconds=0, subject=template.subject, body_html=template.body_html
            ),
            SequenceStep(
                position=1,
                delay_seconds=3 * 86400,
                subject="",
                same_thread=True,
                body_html="<p>Bumping this up, {{first_name|there}}.</p>",
            ),
            SequenceStep(
                position=2,
                delay_seconds=7 * 86400,
                subject="Pricing for {{company}}",
                body_html="<p>Our 2027 pricing, in case it helps.</p>",
            ),
        ]
        session.add_all([template, sequence])
        session.flush()
        for index, (email, name, company) in enumerate(PROSPECTS):
            at = now - timedelta(days=2, hours=index * 3)
            enrollment = enrolling.enroll(
                session, sequence=sequence, email=email, name=name, now=at
            )
            session.flush()
            session.get_one(Prospect, enrollment.prospect_id).company = company
            demo.enrollments.append(enrollment.id)
            demo.prospects.append(enrollment.prospect_id)
        demo.team, demo.mailbox = team.id, mailbox.id
        demo.template, demo.sequence = template.id, sequence.id


def claim_first_step(enrollment_id: int) -> tuple[int, str]:
    """Claim step 1 as the worker would; a step held back (outside the send window, inside
    the mailbox's spacing) is claimed at the time the product gives it."""
    at = utcnow()
    for _ in range(50):
        with session_scope() as session:
            sent = claiming.claim_due_step(session, enrollment_id, at)
            if sent is not None:
                return sent.id, sent.message_id
            due = session.get_one(Enrollment, enrollment_id).next_step_at
        if due is None or due <= at:
            sys.exit(
                f"enrolment {enrollment_id}: step 1 was not claimed and has no time to wait for"
            )
        at = due
    sys.exit(f"enrolment {enrollment_id}: step 1 still held back after 50 tries")


def send_first_steps(demo: Demo) -> None:
    """Step 1 to everyone, through the claim and the send bookkeeping (no mail server needed)."""
    for enrollment_id in demo.enrollments:
        sent_id, message_id = claim_first_step(enrollment_id)
        delivering._record_sent(sent_id, SendResult(message_id=message_id))
        demo.sent.append(sent_id)
    # Sent two days ago, a few minutes after enrolment: the reads that follow are a person's,
    # not a link scanner's (those come within seconds of delivery).
    with session_scope() as session:
        for index, sent_id in enumerate(demo.sent):
            at = utcnow() - timedelta(days=2, hours=index * 3) + timedelta(minutes=2)
            session.get_one(SentMessage, sent_id).sent_at = at
            session.execute(
                update(Event)
                .where(Event.sent_message_id == sent_id, Event.kind == "sent")
                .values(occurred_at=at)
            )


# What the prospects did over the last two days: (prospect, kind, data, hours ago).
HAPPENED: list[tuple[int, str, dict[str, Any], int]] = [
    (0, "open", {"hit_class": "person"}, 40),
    (0, "click", {"url": "https://northwind.example/pricing"}, 38),
    (1, "open", {"probable": True}, 30),
    (2, "open", {"hit_class": "person"}, 22),
    (2, "open", {"hit_class": "google_proxy"}, 20),
    (3, "open", {"hit_class": "person"}, 9),
    (3, "click", {"url": "https://northwind.example/customers"}, 8),
]
REPLY = "Hi Riley, yes, we still log it by hand and it is a pain. Tuesday at 10 works.\n\nDana"


def record_reactions(demo: Demo) -> None:
    """Opens, clicks and Dana's reply (which ends her enrolment), as the workers record them."""
    now = utcnow()
    with session_scope() as session:
        for n, (who, kind, data, hours_ago) in enumerate(HAPPENED):
            record_event(
                session,
                team_id=demo.team,
                key=natural_key(kind, demo.sent[who], 0, n, "demo"),
                kind=kind,
                occurred_at=now - timedelta(hours=hours_ago),
                sent_message_id=demo.sent[who],
                enrollment_id=demo.enrollments[who],
                prospect_id=demo.prospects[who],
                data={"recipient": 0, **data},
            )
        dana = PROSPECTS[0][0]
        message_id = "<reply-1@acme-logistics.example>"
        inbound = InboundMessage(
            team_id=demo.team,
            mailbox_id=demo.mailbox,
            provider_id="demo-reply-1",
            rfc_message_id=message_id,
            sent_message_id=demo.sent[0],
            kind="reply",
            from_addr=dana,
            subject="Re: Quick question, Dana",
            text=REPLY,
            received_at=now - timedelta(hours=5),
        )
        session.add(inbound)
        session.flush()
        event_id = record_event(
            session,
            team_id=demo.team,
            key=natural_key("reply", demo.sent[0], message_id),
            kind="reply",
            occurred_at=now - timedelta(hours=5),
            sent_message_id=demo.sent[0],
            enrollment_id=demo.enrollments[0],
            prospect_id=demo.prospects[0],
            inbound_message_id=inbound.id,
            data={"recipient": 0, "from": dana, "text": REPLY},
        )
        enrolling.transition(
            session,
            demo.enrollments[0],
            EnrollmentState.REPLIED,
            f"reply from {dana}",
            from_states={"active"},
            event_id=event_id,
        )


def schedule_and_link(demo: Demo) -> None:
    """A one-off email for tomorrow, and Dana's tracked link to the deck."""
    with session_scope() as session:
        one_off = OneOffEmail(
            team_id=demo.team,
            mailbox_id=demo.mailbox,
            prospect_id=demo.prospects[4],
            to_addrs=[PROSPECTS[4][0]],
            cc_addrs=[],
            subject="Notes from our call",
            body_html="<p>Hi Lena, thanks for the time today. The notes are below.</p>",
            status=OneOffStatus.SCHEDULED,
            send_at=utcnow() + timedelta(days=1, hours=2),
        )
        session.add(one_off)
        document = session.get_one(Document, demo.document)
        document.allow_download = True
        sent = session.get_one(SentMessage, demo.sent[0])
        link = ensure_link(session, document, sent, 0, tracked=True)
        session.flush()
        demo.email, demo.link = one_off.id, link.id
        demo.viewer = f"/d/{link_token(link.id, demo.document, demo.sent[0], 0)}"


def build_demo() -> Demo:
    """The demo team, made through the product's own code, on the migrated database."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")
    demo = Demo()
    create_team_and_deck(create_app(), demo)
    create_sequence(demo)
    send_first_steps(demo)
    record_reactions(demo)
    schedule_and_link(demo)
    return demo


def sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/signin")
    page.get_by_label("Email").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/feed")


def page_paths(page: Page, base: str, demo: Demo) -> dict[str, str]:
    """Every GET page of the URL map a signed-in rep can open: {name: path}.

    `page` is signed in; a page counts if it answers 200 with HTML (not a redirect).
    """
    values = demo.values()
    found = {}
    for rule in sorted(create_app().url_map.iter_rules(), key=lambda r: r.rule):
        if "GET" not in (rule.methods or ()) or rule.rule.startswith(NOT_PAGES):
            continue
        if any(name not in values for name in rule.arguments):
            continue  # a one-time id (an OAuth confirmation) or a token: not reachable here
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: str(values[m.group(1)]), rule.rule)
        answer = page.request.get(f"{base}{path}", max_redirects=0)
        if answer.status == 200 and answer.headers.get("content-type", "").startswith("text/html"):
            found[rule.endpoint.replace(".", "-").replace("_", "-")] = path
    return {name: path for name, path in found.items() if name not in NOT_SHOT}


def read_the_deck(browser: Browser, base: str, demo: Demo) -> None:
    """The prospect opens their link and reads three pages: the library and feed show it."""
    prospect = browser.new_context(
        viewport=WIDTHS[1366], user_agent=PROSPECT_UA, extra_http_headers=PROSPECT_HEADERS
    )
    reader = prospect.new_page()
    reader.goto(f"{base}{demo.viewer}")
    for _ in range(2):
        reader.wait_for_timeout(1500)
        reader.keyboard.press("ArrowRight")
    reader.wait_for_timeout(1500)
    prospect.close()  # the last page's reading time goes out as the page closes
    time.sleep(1)


def capture(base: str, demo: Demo, out: Path) -> list[Path]:
    taken: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        read_the_deck(browser, base, demo)
        pages: dict[str, str] = {}
        for width, viewport in WIDTHS.items():
            mobile = width < 600
            visitor = browser.new_context(
                viewport=viewport,
                is_mobile=mobile,
                has_touch=mobile,
                timezone_id=TIMEZONE,
                locale="en-US",
            )
            page = visitor.new_page()
            for name, path in (("signin", "/signin"), ("not-found-signed-out", "/no-such-page")):
                taken.append(shoot(page, base, path, out / f"{name}-{width}.png"))
            sign_in(page, base)
            pages = pages or page_paths(page, base, demo)
            for name, path in {**pages, "not-found": "/no-such-page"}.items():
                taken.append(shoot(page, base, path, out / f"{name}-{width}.png"))
            visitor.close()
            # The prospect's view: no session, their own browser.
            reader = browser.new_context(
                viewport=viewport,
                is_mobile=mobile,
                has_touch=mobile,
                user_agent=PROSPECT_UA,
                extra_http_headers=PROSPECT_HEADERS,
            )
            file = out / f"document-viewer-{width}.png"
            taken.append(shoot(reader.new_page(), base, demo.viewer, file))
            reader.close()
        browser.close()
    return taken


def shoot(page: Page, base: str, path: str, file: Path) -> Path:
    """The whole page: the window is made as tall as the page for the shot.

    (Playwright's full-page capture leaves a frame below the fold blank in Chromium:
    the email previews are iframes.)
    """
    page.goto(f"{base}{path}")
    if path.startswith("/feed"):
        page.locator("#feed-status").filter(has_text="Live").wait_for(timeout=10_000)
    page.wait_for_timeout(1000)  # the live preview asks the server again, and redraws
    window = page.viewport_size
    assert window is not None
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": window["width"], "height": max(height, window["height"])})
    page.wait_for_timeout(200)
    page.screenshot(path=str(file))
    page.set_viewport_size(window)
    return file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"{CHROMIUM} is missing: run scripts/test-prereqs.sh browser")
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="sightline-screenshots-"))
    redis_server, socket_path = start_redis(folder)
    env = environment(folder, free_port(), socket_path)
    os.environ.update(env)  # the product reads its settings from the environment, once
    web = None
    try:
        demo = build_demo()
        web = start_web(env, folder / "web.log")
        taken = capture(env["PUBLIC_BASE_URL"], demo, args.out)
    finally:
        if web is not None:
            web.terminate()
            web.wait(timeout=20)
        redis_server.terminate()
        redis_server.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    for file in taken:
        print(file.relative_to(ROOT) if file.is_relative_to(ROOT) else file)
    print(f"{len(taken)} screenshots ({len(taken) // 2} pages at 1366 and 390 px) in {args.out}")


if __name__ == "__main__":
    main()
