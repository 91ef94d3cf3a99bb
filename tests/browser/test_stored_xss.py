"""Stored XSS in headless Chromium: hostile names and text on every page run nothing.

tests/security/test_stored_xss.py checks the HTML; here the real `web`
process serves the same hostile team to Chromium. The signed-in rep visits
every HTML page of the URL map, the prospect opens their document link, and
a hit arriving live draws its (hostile) prospect name into the open Live Feed
through feed.js. On every page: the payloads never ran (`window.__xss`), no
element they describe exists, and the browser reported no blocked inline
script (which would mean markup got through and only the CSP stopped it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from config import Settings
from core.tracking.tokens import open_token
from tests.browser.test_viewer import PROSPECT, browser, start_web  # noqa: F401 - fixture
from tests.integration.test_app_pages import signed_in
from tests.integration.test_feed import PASSWORD
from tests.security.test_routes import path_of, rules
from tests.security.test_stored_xss import PAYLOAD, hostile_team, viewer_path

pytestmark = [pytest.mark.browser, pytest.mark.integration]

INJECTED = """() => ({
  ran: window.__xss === undefined ? null : window.__xss,
  elements: [...document.querySelectorAll('[onerror], [onload], script')].filter(
    (el) => (el.getAttribute('onerror') || el.getAttribute('onload') || el.text || '')
      .includes('__xss')).length,
})"""


class Watched:
    """A page whose console is kept: Chromium reports what the CSP blocked there."""

    def __init__(self, context: Any) -> None:
        self.page = context.new_page()
        self.blocked: list[str] = []
        self.page.on("console", self._console)
        self.page.on("dialog", lambda dialog: self.blocked.append(f"dialog {dialog.message}"))

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "__xss" in message.text:
            self.blocked.append(message.text)

    def check(self, where: str) -> None:
        found = self.page.evaluate(INJECTED)
        assert found == {"ran": None, "elements": 0}, f"{where}: {found}"
        assert not self.blocked, f"{where}: {self.blocked}"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_hostile_names_and_text_run_nothing_in_a_real_browser(
    browser: Any,  # noqa: F811 - the fixture
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    app: Flask,
) -> None:
    from playwright.sync_api import expect

    team = hostile_team(app)
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
    base, stack = start_web(env, database_url, redis_url, tmp_path, "events")
    try:
        rep = browser.new_context()
        watched = Watched(rep)
        page = watched.page
        page.goto(f"{base}/signin")
        page.get_by_label("Email").fill(team.world.user_email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{base}/feed")
        for path in pages:
            page.goto(f"{base}{path}")
            watched.check(path)

        prospect = browser.new_context(**PROSPECT)
        reader = Watched(prospect)
        reader.page.goto(f"{base}{viewer_path(team)}")
        expect(reader.page.locator("h1.name")).to_have_text(f"Deck {PAYLOAD}.pdf")
        reader.check("the recipient's viewer")

        # A hit arrives while the feed is open: feed.js draws it from the stream.
        page.goto(f"{base}/feed")
        expect(page.locator("#feed-status")).to_have_text("Live")
        # Count opens only: the viewer just visited may still add its own document items
        # (its page and time reports land when it is left), later on a slow machine.
        opens = page.locator("#feed .feed-item.kind-open")
        before = opens.count()
        issued = int(time.time()) - 3600  # sent an hour ago: past the scanner window
        pixel = open_token(team.world.sent_id, team.world.team_id, 0, issued)
        assert reader.page.goto(f"{base}/o/{pixel}.gif") is not None
        expect(opens).to_have_count(before + 1, timeout=10_000)
        expect(opens.first).to_contain_text(f"Dana {PAYLOAD}")
        watched.check("the Live Feed after a live hit")
        rep.close()
        prospect.close()
    finally:
        stack.stop()
