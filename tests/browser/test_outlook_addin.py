"""The Outlook add-in's task panes in headless Chromium, behind a fake Office.

The Flask app is served on a thread (the panes and the API are all Flask). Each
page of a test's browser context gets, before any script of ours, a fake of
Office.js (tests/browser/outlook_fake_office.js) standing where Outlook's would:
it answers the open item's properties and records what the add-in asked; the
real office.js URL answers an empty script. The panes are 360 px wide (and
checked at 320 and 450 px), as in Outlook's task pane.

- Signing in: the pane's "Sign in" opens our sign-in page in a popup through the
  fake's displayDialogAsync; the person signs in and continues; the token comes
  back through messageParent (addressed to our origin) and the pane shows who it
  is. "Sign out" revokes that token on the server.
- Compose: one To → the document link inserted at the cursor is that person's;
  two To → the draft's own link; "Track opens" inserts the pixel; a Solo team
  reads why content is unavailable.
- Read: the people of the open message with their sequence and its state, read
  from the database; "Pause" really pauses the enrolment.

Screenshots: artifacts/outlook-compose.png, artifacts/outlook-read.png.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from core.crypto import encrypt_json
from core.db import session_scope
from core.events import natural_key, record_event
from core.models import (
    Document,
    DocumentPage,
    DocumentStatus,
    Enrollment,
    ExternalDraft,
    Mailbox,
    Plan,
    Prospect,
    SentMessage,
    SequenceStep,
    Team,
    User,
    utcnow,
)
from core.models import Sequence as SequenceRow
from tests.browser.test_live_feed import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, PASSWORD
from tests.browser.test_unsubscribe_page import served  # noqa: F401 - the fixture
from tests.conftest import create_user
from tests.services.process import in_ci
from web.addons.outlook import tokens
from worker.sequences import enrolling

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

FAKE_OFFICE = (Path(__file__).parent / "outlook_fake_office.js").read_text()
PANE_SIZE = {"width": 360, "height": 640}
REP = "rep@seller.test"
HOSTILE = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: run scripts/test-prereqs.sh browser"
        if in_ci():
            pytest.fail(message + " (CI is set: a missing browser fails, never skips)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        yield browser
        browser.close()


@dataclass(frozen=True)
class World:
    team_id: int
    user_id: int
    enrollment_id: int
    sequence_id: int
    document_id: int


def build_world(app: Flask, plan: str = Plan.TEAM) -> World:
    """A rep with a password and a mailbox, a two-step sequence Dana is in, a ready document."""
    create_user(app, REP, "Sellers", "--password", PASSWORD)
    with session_scope() as session:
        team = session.scalars(select(Team).where(Team.name == "Sellers")).one()
        team.plan = plan
        user = session.scalars(select(User).where(User.email == REP)).one()
        mailbox = Mailbox(
            team_id=team.id,
            user_id=user.id,
            kind="imap",
            email=REP,
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        sequence = SequenceRow(team_id=team.id, mailbox_id=mailbox.id, name="Intro to Acme")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=3600, subject="Hi", body_html="<p>Hi</p>"),
            SequenceStep(position=1, delay_seconds=86400, subject="", body_html="<p>Bump</p>"),
        ]
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session, sequence=sequence, email="dana@acme.test", name="Dana Scully", now=utcnow()
        )
        document = Document(
            team_id=team.id,
            name="pricing.pdf",
            kind="pdf",
            content_type="application/pdf",
            size_bytes=100,
            sha256="0" * 64,
            status=DocumentStatus.READY,
            page_count=1,
        )
        session.add(document)
        session.flush()
        session.add(DocumentPage(document_id=document.id, number=1, width=800, height=1000))
        return World(team.id, user.id, enrollment.id, sequence.id, document.id)


def addin_token(user_id: int) -> str:
    with session_scope() as session:
        return tokens.issue(session.get_one(User, user_id))


def pane_context(chromium: Any, outlook: dict[str, Any], token: str | None = None) -> Any:
    """A browser context whose every page has the fake Office (and the pane's token, if given)."""
    context = chromium.new_context(viewport=PANE_SIZE)
    context.route(
        "https://appsforoffice.microsoft.com/**",
        lambda route: route.fulfill(
            status=200, content_type="application/javascript", body="/* Office.js: faked */"
        ),
    )
    context.add_init_script(f"window.__fakeOutlook = {json.dumps(outlook)};")
    context.add_init_script(FAKE_OFFICE)
    if token is not None:
        context.add_init_script(
            f"localStorage.setItem('sightline.outlook.token', {json.dumps(token)});"
        )
    return context


def watch_console(page: Any) -> list[str]:
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"{m.text} {m.location}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def office_calls(page: Any, method: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = page.evaluate("window.__officeCalls")
    return [c for c in calls if c["method"] == method]


def fits_every_pane_width(page: Any) -> None:
    """Outlook's pane is 320 to 450 px wide: nothing may scroll sideways in that range."""
    for width in (320, 450):
        page.set_viewport_size({"width": width, "height": PANE_SIZE["height"]})
        assert page.evaluate("document.documentElement.scrollWidth") <= width, width
    page.set_viewport_size(PANE_SIZE)


def enrollment_state(enrollment_id: int) -> str:
    with session_scope() as session:
        return str(session.get_one(Enrollment, enrollment_id).state)


def test_signing_in_through_the_dialog_and_out_again(
    chromium: Any,
    app: Flask,
    served: str,  # noqa: F811 - the fixture
) -> None:
    world = build_world(app)
    reading = {
        "mode": "read",
        "me": REP,
        "from": {"name": "Dana Scully", "email": "dana@acme.test"},
        "to": [{"name": "Rep", "email": REP}],
    }
    context = pane_context(chromium, reading)
    page = context.new_page()
    problems = watch_console(page)
    page.goto(f"{served}/addons/outlook/read")
    expect(page.get_by_role("heading", name="Sign in to Sightline")).to_be_visible()

    with page.expect_popup() as opened:
        page.get_by_role("button", name="Sign in").click()
    dialog = opened.value
    expect(dialog).to_have_url(re.compile(r"/signin\?next="))
    dialog.get_by_label("Email").fill(REP)
    dialog.get_by_label("Password").fill(PASSWORD)
    dialog.get_by_role("button", name="Sign in").click()
    dialog.get_by_role("button", name=f"Continue as {REP}").click()
    dialog.wait_for_event("close")

    expect(page.locator("#pane-user")).to_have_text(REP)
    expect(page.locator("#pane-signin")).to_be_hidden()
    [message] = office_calls(page, "messageParent")
    assert message["targetOrigin"] == served
    [opened_url] = office_calls(page, "displayDialogAsync")
    assert opened_url["url"].startswith(f"{served}/addons/outlook/signin?state=")
    token = page.evaluate("localStorage.getItem('sightline.outlook.token')")
    with session_scope() as session:
        user = tokens.verify(session, token)
        assert user is not None and user.id == world.user_id

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out of Sightline in Outlook.")).to_be_visible()
    assert page.evaluate("localStorage.getItem('sightline.outlook.token')") is None
    with session_scope() as session:
        assert tokens.verify(session, token) is None  # revoked on the server, not only forgotten
    assert problems == []
    context.close()


def composing(to: list[str]) -> dict[str, Any]:
    return {"mode": "compose", "me": REP, "to": [{"name": "", "email": e} for e in to]}


def inserted(page: Any) -> list[dict[str, Any]]:
    return office_calls(page, "setSelectedDataAsync")


def drafts() -> list[tuple[bool, list[str]]]:
    """Each Outlook draft's tracking record: per recipient or not, and its To."""
    with session_scope() as session:
        rows = session.execute(
            select(ExternalDraft.per_recipient, SentMessage.to_addrs)
            .join(SentMessage, SentMessage.id == ExternalDraft.sent_message_id)
            .where(ExternalDraft.source == "outlook")
            .order_by(ExternalDraft.id)
        )
        return [(per_recipient, list(to)) for per_recipient, to in rows]


def test_compose_inserts_the_recipients_link_or_the_drafts_and_the_pixel(
    chromium: Any,
    app: Flask,
    served: str,  # noqa: F811 - the fixture
) -> None:
    world = build_world(app)
    token = addin_token(world.user_id)

    context = pane_context(chromium, composing(["dana@acme.test"]), token)
    page = context.new_page()
    problems = watch_console(page)
    page.goto(f"{served}/addons/outlook/compose")
    expect(page.locator("#compose-audience")).to_contain_text("One recipient")
    page.get_by_role("button", name="Insert pricing.pdf").click()
    expect(page.locator("#compose-result")).to_have_text(
        "Inserted the recipient's own link to pricing.pdf."
    )
    [link] = inserted(page)
    assert link["coercionType"] == "html"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "outlook-compose.png"), full_page=True)
    fits_every_pane_width(page)

    page.get_by_role("button", name="Track opens").click()
    expect(page.locator("#compose-result")).to_have_text("Opens of this email will be tracked.")
    pixel = inserted(page)[1]
    assert "<img" in pixel["data"] and "/o/" in pixel["data"]
    assert page.evaluate("window.__fakeBody.content").startswith("<p>Hello,</p>")
    # Link and pixel went to one tracking record: the draft's, Dana's alone.
    assert drafts() == [(True, ["dana@acme.test"])]
    context.close()

    # Two people in To: one link for the draft, counted for the email, not for a person.
    context = pane_context(chromium, composing(["dana@acme.test", "fox@acme.test"]), token)
    page = context.new_page()
    page.goto(f"{served}/addons/outlook/compose")
    expect(page.locator("#compose-audience")).to_contain_text("2 recipients")
    page.get_by_role("button", name="Insert pricing.pdf").click()
    expect(page.locator("#compose-result")).to_have_text(
        "Inserted a link for this email to pricing.pdf."
    )
    [draft_link] = inserted(page)
    assert draft_link["data"] != link["data"]
    assert re.search(r'href="[^"]+/d/[^"]+"', draft_link["data"])
    assert drafts()[1] == (False, ["dana@acme.test", "fox@acme.test"])
    assert problems == []
    context.close()


def test_a_solo_team_reads_why_content_is_unavailable(
    chromium: Any,
    app: Flask,
    served: str,  # noqa: F811 - the fixture
) -> None:
    world = build_world(app, plan=Plan.SOLO)
    context = pane_context(chromium, composing(["dana@acme.test"]), addin_token(world.user_id))
    page = context.new_page()
    page.goto(f"{served}/addons/outlook/compose")
    expect(page.locator("#content-unavailable")).to_contain_text("Team plan")
    expect(page.get_by_role("button", name="Insert pricing.pdf")).to_have_count(0)
    context.close()


def dana_opened_and_clicked(world: World) -> None:
    """Step 1 went to Dana an hour ago; she opened it and followed its link."""
    with session_scope() as session:
        enrollment = session.get_one(Enrollment, world.enrollment_id)
        sent = SentMessage(
            team_id=world.team_id,
            mailbox_id=session.get_one(SequenceRow, world.sequence_id).mailbox_id,
            enrollment_id=enrollment.id,
            step_position=0,
            prospect_id=enrollment.prospect_id,
            message_id="<step1.dana@seller.test>",
            subject="Hi",
            to_addrs=["dana@acme.test"],
            status="sent",
            sent_at=utcnow() - timedelta(hours=1),
        )
        session.add(sent)
        session.flush()
        for kind, data in (
            ("open", {"recipient": 0}),
            ("click", {"recipient": 0, "url": "https://acme.test/pricing"}),
        ):
            record_event(
                session,
                team_id=world.team_id,
                key=natural_key(kind, sent.id, 0),
                kind=kind,
                sent_message_id=sent.id,
                enrollment_id=enrollment.id,
                prospect_id=enrollment.prospect_id,
                occurred_at=utcnow() - timedelta(minutes=30),
                data=data,
            )


def test_the_read_pane_shows_the_sequence_state_and_pause_pauses_it(
    chromium: Any,
    app: Flask,
    served: str,  # noqa: F811 - the fixture
) -> None:
    world = build_world(app)
    dana_opened_and_clicked(world)
    reading = {
        "mode": "read",
        "me": REP,
        "from": {"name": "Dana Scully", "email": "dana@acme.test"},
        "to": [{"name": "Rep", "email": REP}],
        "cc": [{"name": "Fox", "email": "fox@acme.test"}],
    }
    context = pane_context(chromium, reading, addin_token(world.user_id))
    page = context.new_page()
    problems = watch_console(page)
    page.goto(f"{served}/addons/outlook/read")

    dana = page.locator('[data-address="dana@acme.test"]')
    enrollment = dana.locator(f'[data-enrollment-id="{world.enrollment_id}"]')
    expect(enrollment).to_contain_text("Intro to Acme")
    expect(enrollment.locator(".state")).to_have_text("Active")
    expect(page.locator('[data-address="fox@acme.test"]')).to_contain_text("Not a prospect yet.")
    expect(page.locator(f'[data-address="{REP}"]')).to_have_count(0)  # the user's own address
    expect(dana.locator(".activity li")).to_have_count(2)  # her open and her click
    expect(dana.locator(".activity li").first).to_contain_text("Hi")
    expect(page.locator("#activity .feed-item")).to_have_count(2)  # the footer's Live Feed
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "outlook-read.png"), full_page=True)
    fits_every_pane_width(page)

    with session_scope() as session:  # text from the database is drawn as text, never markup
        enrolled = session.get_one(Enrollment, world.enrollment_id)
        session.get_one(Prospect, enrolled.prospect_id).company = HOSTILE
    enrollment.get_by_role("button", name="Pause").click()  # the pane draws itself again
    expect(enrollment.locator(".state")).to_have_text("Paused")
    expect(dana.locator(".address")).to_have_text(f"dana@acme.test · {HOSTILE}")
    assert page.evaluate("window.__xss") is None and page.locator("img").count() == 0
    assert enrollment_state(world.enrollment_id) == "paused"
    expect(enrollment.get_by_role("button", name="Resume")).to_be_visible()

    fox = page.locator('[data-address="fox@acme.test"]')
    fox.get_by_label("Add to sequence…").select_option(label="Intro to Acme")
    fox.get_by_role("button", name="Add").click()
    expect(fox.locator(".enrollment .state")).to_have_text("Active")
    with session_scope() as session:
        added = session.scalars(select(Enrollment).where(Enrollment.id != world.enrollment_id))
        assert [(e.state, e.sequence_id) for e in added] == [("active", world.sequence_id)]
    assert problems == []
    context.close()
