"""A salesperson's journey through the web app in headless Chromium, on real parts.

The Procfile's web, worker, cron, listener and events processes run against
PostgreSQL, Redis, Dovecot and the SMTP server. In one browser the rep signs in,
connects an IMAP mailbox, writes a template in the rich-text editor, builds a
two-step sequence from it, imports four prospects from a CSV file (one bad row,
reported with its line), and watches: step 1 lands in the prospect's Dovecot
INBOX, the prospect opens it (another browser loads the pixel) and replies (over
SMTP), and the enrolment page shows `replied` with the reply's text while the
funnel counts the open and the reply. Then a one-off email with a plain file is
composed and delivered. Every page is checked for CSP violations and, at phone
width, for sideways scrolling. Screenshots at desktop and phone widths go to
artifacts/ for a reviewer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from config import Settings
from tests.browser.test_live_feed import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, PROSPECT_UA
from tests.conftest import create_user, service_environment
from tests.integration.test_feed import PASSWORD
from tests.services import process
from tests.services.dovecot import DovecotServer
from tests.services.process import in_ci
from tests.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.integration]

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
def browser() -> Iterator[Any]:
    import os

    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: run scripts/test-prereqs.sh browser"
        if in_ci():
            pytest.fail(message + " (CI is set: a missing browser fails, never skips)")
        pytest.skip(message)
    from playwright.sync_api import expect, sync_playwright

    # A 2-core machine running other suites at once can be slow: wait longer, never
    # less surely (the default is 5 s).
    expect.set_options(timeout=20_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield chromium
        finally:
            chromium.close()
            expect.set_options(timeout=5_000)


@pytest.fixture
def stack(
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, Stack]]:
    port = process.free_port()
    base = f"http://127.0.0.1:{port}"
    extra = {
        "PORT": str(port),
        "PUBLIC_BASE_URL": base,
        "WEB_CONCURRENCY": "1",
        "SIGHTLINE_SEQUENCE_TICK_SECONDS": "1",
        "SIGHTLINE_SYNC_POLL_SECONDS": "5",
        # The prospect opens the email seconds after it was sent: not a scanner here.
        "SIGHTLINE_TRACKING_SCANNER_SECONDS": "0",
    }
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    environment = {**service_environment(database_url, redis_url, env.var_dir), **extra}
    running = Stack(environment, tmp_path / "logs").start(
        "web", "events", "worker", "cron", "listener"
    )

    def answers() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    running.wait_for("the web process", answers, timeout=30)
    yield base, running
    running.stop()


class Watch:
    """Script errors and Content-Security-Policy refusals on every page watched.

    (A 422 answer to a form is expected here and logs a console error of its own,
    so only CSP refusals are taken from the console.)
    """

    def __init__(self) -> None:
        self.problems: list[str] = []

    def _console(self, message: Any) -> None:
        if message.type == "error" and (
            "Content Security Policy" in message.text or "Refused to" in message.text
        ):
            self.problems.append(message.text)

    def attach(self, page: Any) -> Any:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        return page


def wider_than_the_screen(page: Any) -> list[str]:
    """Elements that stick out sideways (none, when the page fits a phone)."""
    found: list[str] = page.evaluate(
        """() => {
          if (document.documentElement.scrollWidth <= window.innerWidth + 1) return [];
          return Array.from(document.querySelectorAll("body *"))
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
            .slice(0, 8)
            .map(e => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className);
        }"""
    )
    return found


def shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"app-{name}.png"), full_page=True)


def reply_to(author: str, to: str, message_id: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = to
    msg["Subject"] = f"Re: {subject}"
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg.set_content(f"Yes, Tuesday at 10 works for us.\n\nDana\n\n> {subject}\n")
    return msg


def until(what: str, check: Callable[[], Any], stack: Stack, timeout: float = 30) -> Any:
    return stack.wait_for(what, check, timeout=timeout, interval=0.2)


@on_postgresql
def test_sign_in_connect_build_import_send_reply_and_see_it(
    browser: Any,
    stack: tuple[str, Stack],
    app: Flask,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> None:
    from playwright.sync_api import expect

    base, running = stack
    ARTIFACTS.mkdir(exist_ok=True)
    sender = unique_address("seller.test", "rep")
    dana, walter, monica = (unique_address("acme.test", n) for n in ("dana", "walter", "monica"))
    create_user(app, sender, "Sellers", "--password", PASSWORD, "--name", "Riley Rep")
    watch = Watch()
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(30_000)
    page = watch.attach(context.new_page())
    page.on("dialog", lambda dialog: dialog.accept())
    started = time.monotonic()

    # Sign in, connect the IMAP mailbox.
    page.goto(f"{base}/mailboxes/imap")
    page.get_by_label("Email").fill(sender)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/mailboxes/imap")
    page.get_by_label("Email address").fill(sender)
    page.get_by_label("IMAP server").fill(dovecot.host)
    page.get_by_label("IMAP port").fill(str(dovecot.imap_port))
    page.get_by_label("IMAP security").select_option("none")
    page.get_by_label("IMAP password").fill("wrong password")
    page.get_by_label("SMTP server").fill(smtp_server.host)
    page.get_by_label("SMTP port").fill(str(smtp_server.port))
    page.get_by_label("SMTP security").select_option("none")
    page.get_by_role("button", name="Check and connect").click()
    # A wrong password is refused before anything is saved, on the right field.
    expect(page.locator(".error-summary")).to_contain_text("IMAP:")
    expect(page.locator("#f-imap_host")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("IMAP server")).to_have_value(dovecot.host)  # kept
    page.get_by_label("IMAP password").fill(dovecot.password)
    page.get_by_label("SMTP password").fill(smtp_server.password)
    page.get_by_role("button", name="Check and connect").click()
    expect(page.get_by_text(f"{sender} is connected.")).to_be_visible()

    # A template, written in the rich-text editor with a placeholder from the toolbar.
    page.goto(f"{base}/templates/new")
    page.get_by_label("Name").fill("Intro")
    page.get_by_label("Subject").fill("Quick question, {{first_name}}")
    editor = page.locator("#f-body_html-rich")
    expect(editor).to_be_visible()
    expect(page.locator("textarea#f-body_html")).to_be_hidden()
    editor.click()
    page.keyboard.type("Hi ")
    page.select_option("[data-insert-placeholder]", "first_name")
    page.keyboard.type(", is ")
    page.keyboard.press("Control+b")
    page.keyboard.type("{{company}}")
    page.keyboard.press("Control+b")
    page.keyboard.type(" still looking at tracking?")
    # The live preview follows: no prospect yet, so the missing values are shown.
    expect(page.locator("#preview-problems")).to_contain_text("{{first_name}} has no value")
    frame = page.frame_locator("iframe.preview-frame")
    expect(frame.locator("mark.missing-value").first).to_have_text("[first_name missing]")
    shoot(page, "template-editor-desktop")
    page.get_by_role("button", name="Save template").click()
    expect(page.get_by_text("Saved template “Intro”.")).to_be_visible()

    # A two-step sequence: step 1 from the template, step 2 in the same thread.
    page.goto(f"{base}/sequences/new")
    page.get_by_label("Name").fill("Q4 outreach")
    # The send window starts at Mon-Fri 08:00-18:00; this journey runs at any hour.
    expect(page.get_by_label("Mon", exact=True)).to_be_checked()
    expect(page.get_by_label("Sat", exact=True)).not_to_be_checked()
    page.get_by_label("Sat", exact=True).check()
    page.get_by_label("Sun", exact=True).check()
    page.get_by_label("From", exact=True).fill("00:00")
    page.get_by_label("Until", exact=True).fill("24:00")
    page.get_by_role("button", name="Create and add the first step").click()
    page.get_by_label("Start from a template").select_option(label="Intro")
    page.get_by_role("button", name="Use template").click()
    expect(page.get_by_label("Subject")).to_have_value("Quick question, {{first_name}}")
    expect(editor).to_contain_text("Hi {{first_name}}, is {{company}} still looking at tracking?")
    expect(editor.locator("b, strong")).to_have_text("{{company}}")
    page.get_by_label("Amount").fill("0")
    page.get_by_role("button", name="Save step 1").click()
    page.get_by_role("link", name="Add step 2").click()
    page.get_by_label("Amount").fill("1")
    page.get_by_label("Unit").select_option("days")
    expect(page.get_by_label("Send in the same thread")).to_be_checked()
    editor.click()
    page.keyboard.type("Bumping this up, {{first_name|there}}.")
    page.get_by_role("button", name="Save step 2").click()
    expect(page.locator(".steps .step")).to_have_count(2)
    sequence_url = page.url

    # Four prospects from a CSV file; line 3 is bad and is reported with its line.
    csv_text = (
        "email,first_name,last_name,company\n"
        f"{dana},Dana,Scully,Acme\n"
        "dana.at.acme.test,Fox,Mulder,FBI\n"
        f"{walter},Walter,Skinner,FBI\n"
        f"{monica},Monica,Reyes,FBI\n"
    )
    page.get_by_label("CSV file", exact=True).set_input_files(
        {"name": "prospects.csv", "mimeType": "text/csv", "buffer": csv_text.encode()}
    )
    page.get_by_role("button", name="Check the file").click()
    expect(page.locator("[data-ready]")).to_have_text("3 rows are ready to enrol.")
    expect(page.locator('tr[data-line="3"]')).to_contain_text(
        "email: “dana.at.acme.test” is not a valid email address"
    )
    shoot(page, "import-preview-desktop")
    page.get_by_role("button", name="Enrol 3 prospects").click()
    expect(page.get_by_text("Enrolled 3 prospects from the file; 1 row left out.")).to_be_visible()

    # Step 1 arrives in Dana's real mailbox.
    delivered = dovecot.wait_for_message(
        dana, lambda m: m["Subject"] == "Quick question, Dana", timeout=30
    )
    html_part = delivered.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    # (Chrome's editor writes &nbsp; next to a formatting change: the same on screen.)
    assert "Hi Dana, is <b>Acme</b> still looking at tracking?" in html.replace("&nbsp;", " ")
    pixel = re.search(r'src="([^"]+/o/[^"]+\.gif)"', html)
    assert pixel is not None

    # Dana opens it (her own browser, elsewhere) and replies.
    prospect = browser.new_context(
        user_agent=PROSPECT_UA, extra_http_headers={"X-Forwarded-For": "203.0.113.9"}
    )
    assert prospect.new_page().goto(pixel.group(1)).status == 200
    prospect.close()
    with smtp_server.connect(login=dana) as smtp:
        smtp.send_message(
            reply_to(dana, sender, str(delivered["Message-ID"]), "Quick question, Dana")
        )

    # The enrolment page shows `replied`, with the reply's text.
    page.goto(sequence_url)
    page.get_by_role("link", name="Dana Scully").click()
    state = page.locator("#enrollment-state")

    def replied() -> bool:
        page.reload()
        return bool(state.get_attribute("data-state") == "replied")

    until("the enrolment to show replied", replied, running)
    expect(page.locator(".reply-text")).to_contain_text("Yes, Tuesday at 10 works for us.")
    expect(page.locator(".reply-text")).not_to_contain_text("> Quick question")
    expect(state).to_contain_text(f"reply from {dana}")
    shoot(page, "enrollment-desktop")

    # The funnel counts the open (a person) and the reply.
    page.goto(sequence_url)
    page.get_by_role("link", name="Report", exact=True).click()

    def counted() -> bool:
        page.reload()
        row = page.locator('tr[data-step="1"]')
        opened: str = row.locator('td[data-stage="opened"]').inner_text()
        sent: str = row.locator('td[data-stage="sent"]').inner_text()
        return opened.startswith("1 ") and sent == "3"

    until("the funnel to count the open and all three sends", counted, running)
    step_1 = page.locator('tr[data-step="1"]')
    expect(step_1.locator('td[data-stage="sent"]')).to_have_text("3")
    expect(step_1.locator('td[data-stage="replied"]')).to_contain_text("1")
    expect(page.locator('rect[data-step="1"][data-stage="replied"]')).to_have_attribute(
        "data-count", "1"
    )
    shoot(page, "report-desktop")

    # A one-off email with a plain file, bold text from the toolbar.
    page.goto(f"{base}/emails/new?to={walter}")
    page.get_by_label("Subject").fill("Notes from today")
    editor.click()
    page.keyboard.type("Hi {{first_name}}, the notes are ")
    page.get_by_role("button", name="Bold").click()
    page.keyboard.type("attached")
    page.get_by_label("Attach files").set_input_files(
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"Meeting notes\n"}
    )
    expect(page.locator("#preview-subject")).to_have_text("Notes from today")
    expect(frame.locator("body")).to_contain_text("Hi Walter, the notes are attached")
    shoot(page, "compose-desktop")
    page.get_by_role("button", name="Send", exact=True).click()
    # One true status (sending now, or already sent), never "Scheduled for" beside it.
    expect(page.locator("#send-status")).to_have_attribute(
        "data-status", re.compile("sending|sent")
    )
    expect(page.get_by_text("Scheduled for")).to_have_count(0)
    note = dovecot.wait_for_message(
        walter, lambda m: m["Subject"] == "Notes from today", timeout=30
    )
    note_html = note.get_body(("html",))
    assert note_html is not None
    assert "the notes are <b>attached</b>" in note_html.get_content().replace("&nbsp;", " ")
    assert [p.get_filename() for p in note.iter_attachments()] == ["notes.txt"]
    page.goto(f"{base}/emails")
    expect(page.locator(f'[data-recipient="{dana}"]')).to_have_attribute("data-state", "replied")
    shoot(page, "emails-desktop")
    journey_seconds = time.monotonic() - started

    # The main pages at phone width: no sideways scrolling, nothing broken.
    phone = watch.attach(
        browser.new_context(viewport=PHONE, storage_state=context.storage_state()).new_page()
    )
    for name, path in (
        ("emails", "/emails"),
        ("compose", "/emails/new"),
        ("sequence", sequence_url.removeprefix(base)),
        ("prospects", "/prospects"),
        ("reports", "/reports"),
        ("templates", "/templates"),
    ):
        phone.goto(f"{base}{path}")
        assert wider_than_the_screen(phone) == [], f"{path} scrolls sideways at phone width"
        shoot(phone, f"{name}-phone")
    phone.goto(f"{base}/prospects?q=dana")
    with phone.expect_navigation():  # measure the prospect's page, not one being left
        phone.get_by_role("link", name="Dana Scully").click()
    assert wider_than_the_screen(phone) == []
    shoot(phone, "prospect-phone")
    assert watch.problems == [], watch.problems
    context.close()
    print(f"journey took {journey_seconds:.1f} s from sign-in to the delivered one-off email")
