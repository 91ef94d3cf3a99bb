"""One product at every width, in the reader's own time zone, in headless Chromium.

The Procfile's `web` process serves a team with one of everything
(tests/security/test_routes.py's `side`: a mailbox, a template, a sequence whose
sent step was opened, clicked and replied to, a one-off email, a document and
its link). The signed-in rep opens every HTML page of the URL map:

- at 1366 px every page has the same header, the same stylesheet and the same
  content width, so switching tabs never moves the page;
- at 390 px (a phone) no page scrolls sideways
  (`document.documentElement.scrollWidth <= 390`);
- the template preview's "Filled in for" field is a usable width at both;
- in a browser set to New York time, times are shown in New York time with the
  zone's name, on the server-rendered pages and on a Live Feed item that
  arrives through the stream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from config import Settings
from core.db import session_scope
from core.events import natural_key, record_event
from core.models import Mailbox, Prospect
from tests.browser.test_viewer import browser, start_web  # noqa: F401 - fixture
from tests.integration.test_app_pages import signed_in
from tests.integration.test_feed import PASSWORD
from tests.security.test_routes import Side, path_of, rules, side

pytestmark = [pytest.mark.browser, pytest.mark.integration]

on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
# A long, unbroken address: what a real mailbox list holds and what pushes a table wide.
MAILBOX = "rep.with.a.long.address@sellers-of-tracking.example.com"
OVERFLOW = """() => ({
  width: document.documentElement.scrollWidth,
  wide: Array.from(document.querySelectorAll("body *"))
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
    .slice(0, 5).map(e => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className),
})"""
LAYOUT = """() => ({
  sheets: Array.from(document.querySelectorAll('link[rel=stylesheet]'))
    .map(l => new URL(l.href).pathname),
  main: Math.round(document.querySelector('main').getBoundingClientRect().width),
  left: Math.round(document.querySelector('main h1').getBoundingClientRect().left),
  nav: document.querySelectorAll('.site-header nav a').length,
  // Not compared: to tell why a page differs (a page wider than the window moves main).
  scrollWidth: document.documentElement.scrollWidth,
  clientWidth: document.documentElement.clientWidth,
})"""


def team_pages(app: Flask) -> tuple[Side, list[str]]:
    """A team with one of everything, and every HTML page its rep can open."""
    team = side(app, "Team A", "rep@team-a.test", "dana@acme.test", "Acme")
    client = signed_in(app, team.world.user_email)
    pages = []
    for rule in rules(app):
        # The Outlook add-in's panes live inside Outlook, with Office.js and a layout of their
        # own: tests/browser/test_outlook_addin.py opens them behind a fake Office.
        outside = ("/api/", "/d/", "/static/", "/addons/outlook/")
        if "GET" in rule.methods and not rule.rule.startswith(outside):
            path = path_of(rule, team.values())
            response = client.get(path)
            if response.status_code == 200 and response.mimetype == "text/html":
                pages.append(path)
    assert len(pages) >= 20  # 24 when this was written
    return team, pages


def sign_in(page: Any, base: str, email: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/feed")


def assert_picker_usable(page: Any) -> None:
    """The preview's "Filled in for" field: as tall as the form's other fields, and wide."""
    picker = page.locator("#f-preview_prospect").bounding_box()
    name = page.locator("#f-name").bounding_box()
    assert picker is not None and name is not None
    assert picker["width"] >= 200 and abs(picker["height"] - name["height"]) <= 1, (picker, name)


@on_postgresql
def test_every_page_shares_one_layout_and_fits_a_phone(
    browser: Any,  # noqa: F811 - the fixture
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    app: Flask,
) -> None:
    team, pages = team_pages(app)
    with session_scope() as session:
        session.get_one(Mailbox, team.world.mailbox_id).email = MAILBOX
    base, stack = start_web(env, database_url, redis_url, tmp_path)
    try:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        sign_in(page, base, team.world.user_email)
        layouts = {}
        for path in pages:
            page.goto(f"{base}{path}")
            layouts[path] = page.evaluate(LAYOUT)
        del layouts["/signin"]  # signed in, it shows its card all the same: not a tab
        # The content library may add its own sheet after the shared one; nothing replaces it.
        assert {p: s["sheets"][0] for p, s in layouts.items()} == dict.fromkeys(
            layouts, "/static/app.css"
        )
        feed = layouts["/feed"]
        differ = {
            p: s
            for p, s in layouts.items()
            if (s["main"], s["left"], s["nav"]) != (feed["main"], feed["left"], feed["nav"])
        }
        assert not differ, f"pages laid out unlike the Live Feed {feed}: {differ}"
        template_page = f"/templates/{team.world.template_id}"
        page.goto(f"{base}{template_page}")
        assert_picker_usable(page)
        # The front door (web.tracking.app) hands /favicon.ico to the app, like any page.
        icon = page.request.get(f"{base}/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
        context.close()

        phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        page = phone.new_page()
        sign_in(page, base, team.world.user_email)
        wide = {}
        for path in [*pages, "/no-such-page"]:
            page.goto(f"{base}{path}")
            found = page.evaluate(OVERFLOW)
            if found["width"] > PHONE["width"]:
                wide[path] = found
        assert not wide, f"pages wider than a 390 px phone: {wide}"
        page.goto(f"{base}{template_page}")
        assert_picker_usable(page)
        phone.close()
    finally:
        stack.stop()


def local_text(when: datetime) -> str:
    """How Chromium (en-US) shows `when` in New York: "Dec 6, 9:05 AM EST" (a year if not this)."""
    local = when.astimezone(ZoneInfo("America/New_York"))
    hour = local.strftime("%I").lstrip("0")
    year = f", {local.year}" if local.year != datetime.now(UTC).year else ""
    return f"{local.strftime('%b')} {local.day}{year}, {hour}:{local:%M} {local:%p} {local:%Z}"


@on_postgresql
def test_times_show_in_the_browsers_zone_also_when_they_arrive_live(
    browser: Any,  # noqa: F811 - the fixture
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    app: Flask,
) -> None:
    from playwright.sync_api import expect

    team = side(app, "Team A", "rep@team-a.test", "dana@acme.test", "Acme")
    # 23:30 UTC is 18:30 in New York: another hour, and on the 5th, not the 6th, of December.
    added = datetime(2026, 12, 5, 23, 30, tzinfo=UTC)
    with session_scope() as session:
        prospect = session.get_one(Prospect, team.world.prospect_id)
        prospect.created_at = added
    base, stack = start_web(env, database_url, redis_url, tmp_path)
    try:
        context = browser.new_context(timezone_id="America/New_York", locale="en-US")
        page = context.new_page()
        sign_in(page, base, team.world.user_email)
        page.goto(f"{base}/prospects")
        shown = page.locator("td[data-label=Added] time")
        expect(shown).to_have_text(local_text(added))
        assert local_text(added).endswith("6:30 PM EST")
        expect(shown).to_have_attribute("title", "2026-12-05 23:30 UTC")

        page.goto(f"{base}/feed")
        expect(page.locator("#feed-status")).to_have_text("Live")
        before = page.locator("#feed .feed-item").count()
        live_at = datetime(2026, 12, 6, 14, 5, tzinfo=UTC)
        with session_scope() as session:
            record_event(
                session,
                team_id=team.world.team_id,
                key=natural_key("click", team.world.sent_id, 0, 0, 99),
                kind="click",
                sent_message_id=team.world.sent_id,
                enrollment_id=team.world.enrollment_id,
                prospect_id=team.world.prospect_id,
                occurred_at=live_at,
                data={"recipient": 0, "url": "https://acme.test/pricing"},
            )
        items = page.locator("#feed .feed-item")
        expect(items).to_have_count(before + 1, timeout=10_000)
        expect(items.first.locator("time")).to_have_text(local_text(live_at))
        context.close()
    finally:
        stack.stop()
