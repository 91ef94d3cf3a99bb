"""Connecting Microsoft 365 and Gmail from the Mailboxes page, in headless Chromium.

The real `web` process serves http://localhost:<port>; the fake Microsoft
identity platform and the fake Google run on https://127.0.0.1:<port>: another
*site*, so Chromium applies SameSite to our cookies exactly as it would with
login.microsoftonline.com. The rep clicks "Connect Microsoft 365": our start
page binds the browser and sends it on, the fake consents and its form_post
page POSTs the code back cross-site (no cookies ride along), we hand it on to a
GET (where they do), and the rep sees "Connect … (Microsoft 365) to team Team
A?" and presses Connect. Gmail is started the same way and cancelled. Then a
stranger, in a browser of their own, is handed the consent link of the rep's
Gmail connect and approves it with their own account: they get "started in
another browser" and nothing lands in the rep's team. No page reports a
Content-Security-Policy refusal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from config import Settings
from tests.browser.test_live_feed import CHROMIUM_FLAGS
from tests.browser.test_viewer import browser  # noqa: F401 - the fixture
from tests.conftest import create_user, service_environment
from tests.fakes.gmail import FakeGmail
from tests.fakes.graph import FakeGraph
from tests.integration.oauth_browsers import mailboxes
from tests.integration.test_feed import PASSWORD
from tests.services import process
from tests.stack import Stack

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

REP = "rep@team-a.test"
STRANGER = "someone@team-b.test"
assert "--no-sandbox" in CHROMIUM_FLAGS  # launched by the shared `browser` fixture


@pytest.fixture
def web(
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    fake_gmail: FakeGmail,
    fake_graph: FakeGraph,
) -> Iterator[str]:
    """The web process on http://localhost (the fakes are on 127.0.0.1: another site)."""
    port = process.free_port()
    base = f"http://localhost:{port}"
    environment = {
        **service_environment(database_url, redis_url, env.var_dir),
        "PORT": str(port),
        "PUBLIC_BASE_URL": base,
        "WEB_CONCURRENCY": "1",
    }
    stack = Stack(environment, tmp_path / "logs").start("web")

    def answers() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    stack.wait_for("the web process", answers, timeout=30)
    try:
        yield base
    finally:
        stack.stop()


class Csp:
    """Content-Security-Policy refusals Chromium reports on our pages."""

    def __init__(self, page: Any) -> None:
        self.refused: list[str] = []
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.refused.append(message.text)


def sign_in(context: Any, base: str, email: str) -> Any:
    from playwright.sync_api import expect

    page = context.new_page()
    page.goto(f"{base}/signin")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/feed")
    return page


def test_connect_from_the_page_confirms_and_a_strangers_browser_lands_nothing(
    browser: Any,  # noqa: F811 - the fixture
    app: Flask,
    web: str,
    fake_gmail: FakeGmail,
    fake_graph: FakeGraph,
) -> None:
    from playwright.sync_api import expect

    token = create_user(app, REP, "Team A", "--password", PASSWORD)
    create_user(app, STRANGER, "Team B", "--password", PASSWORD)
    rep_context = browser.new_context(ignore_https_errors=True)  # the fakes' throwaway CA
    page = sign_in(rep_context, web, REP)
    csp = Csp(page)

    # Microsoft 365: start page → fake consent → form_post (cross-site) → confirm → Connect.
    fake_graph.add_user("rep@contoso.test")
    fake_graph.store.consenting_user = "rep@contoso.test"
    page.goto(f"{web}/mailboxes")
    page.get_by_role("button", name="Connect Microsoft 365").click()
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_have_text("Connect rep@contoso.test (Microsoft 365) to team Team A?")
    assert page.url.startswith(f"{web}/connect/confirm/")
    assert mailboxes("Team A") == []  # nothing yet
    page.get_by_role("button", name="Connect").click()
    expect(page).to_have_url(f"{web}/mailboxes")
    expect(page.locator("table.mailboxes")).to_contain_text("rep@contoso.test")
    assert mailboxes("Team A") == ["rep@contoso.test"]

    # Gmail, then Cancel: nothing saved, the grant given back.
    fake_gmail.add_user("rep@team-a.test")
    fake_gmail.store.consenting_user = "rep@team-a.test"
    page.get_by_role("button", name="Connect Gmail").click()
    expect(heading).to_have_text("Connect rep@team-a.test (Gmail) to team Team A?")
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("status")).to_contain_text("nothing was saved")
    assert mailboxes("Team A") == ["rep@contoso.test"]
    assert all(t.revoked for t in fake_gmail.store.refresh_tokens.values())

    # The rep starts a Gmail connect through the API and hands its consent link on.
    started = requests.post(
        f"{web}/api/v1/mailboxes/connect",
        json={"kind": "gmail"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    link = started.json()["authorization_url"]
    assert link.startswith(f"{web}/connect/start/")
    consent_links: list[str] = []

    def hold(route: Any) -> None:  # the rep does not go on to Google this time
        consent_links.append(route.request.url)
        # Answered, not aborted: Chromium reloads a page that failed to load by itself.
        route.fulfill(status=200, content_type="text/plain", body="held by the test")

    rep_context.route("https://127.0.0.1:*/**", hold)
    page.goto(link)
    page.wait_for_timeout(500)
    assert consent_links, "the start page did not send the browser on to the provider"
    rep_context.unroute("https://127.0.0.1:*/**")

    fake_gmail.add_user("victim@elsewhere.test")
    fake_gmail.store.consenting_user = "victim@elsewhere.test"
    stranger_context = browser.new_context(ignore_https_errors=True)
    stranger = sign_in(stranger_context, web, STRANGER)
    stranger.goto(consent_links[0])
    expect(stranger.get_by_role("alert")).to_contain_text("started in another browser")
    assert mailboxes("Team A") == ["rep@contoso.test"] and mailboxes("Team B") == []
    assert not csp.refused, csp.refused
    rep_context.close()
    stranger_context.close()
