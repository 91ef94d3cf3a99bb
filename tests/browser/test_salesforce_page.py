"""An admin connects Salesforce with the button and retries a dead letter, in headless Chromium.

The real `web` process serves http://localhost:<port>; the fake Salesforce
(login host, OAuth and REST over TLS) runs on https://127.0.0.1:<port>, another
site. The banner on the feed says activities wait; "Connect Salesforce" goes to
our start page, on to the fake's authorize endpoint, back through the
Connected App's callback to the confirm page, and Connect lands on the
Salesforce page with the org's fields. A Task the org refused shows as a dead
letter; once the rule is fixed, Retry queues it and the next flush writes it,
once. No page reports a Content-Security-Policy refusal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

from config import Settings, get_settings
from tests.browser.test_oauth_connect import Csp, sign_in
from tests.browser.test_viewer import browser  # noqa: F401 - the fixture
from tests.conftest import create_user, service_environment
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.test_feed import PASSWORD
from tests.integration.test_salesforce_page import owe, team_id
from tests.services import process
from tests.stack import Stack
from worker.salesforce.outbox import flush_team

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

ADMIN = "admin@team-a.test"


@pytest.fixture
def web(
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    fake_salesforce: FakeSalesforce,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """The web process, with a Connected App at the fake and no operator-level org."""
    port = process.free_port()
    base = f"http://localhost:{port}"
    salesforce = {
        "SALESFORCE_LOGIN_URL": fake_salesforce.instance_url,
        "SALESFORCE_CLIENT_ID": fake_salesforce.oauth["client_id"],
        "SALESFORCE_CLIENT_SECRET": fake_salesforce.oauth["client_secret"],
    }
    for name, value in salesforce.items():
        monkeypatch.setenv(name, value)  # this process too: it flushes the outbox
    monkeypatch.setenv("PUBLIC_BASE_URL", base)  # the Connected App's callback is the web's
    get_settings.cache_clear()
    environment = {
        **service_environment(database_url, redis_url, env.var_dir),
        **salesforce,
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


def test_admin_connects_with_the_button_sees_the_status_and_retries_a_dead_letter(
    browser: Any,  # noqa: F811 - the fixture
    app: Flask,
    web: str,
    fake_salesforce: FakeSalesforce,
) -> None:
    from playwright.sync_api import expect

    create_user(app, ADMIN, "Team A", "--password", PASSWORD)
    owe(["fine", "blocked by a rule"])
    context = browser.new_context(ignore_https_errors=True)  # the fake's throwaway CA
    page = sign_in(context, web, ADMIN)
    csp = Csp(page)
    banner = page.locator("#salesforce-banner")
    expect(banner).to_have_text("2 activities are waiting: Salesforce is not connected — Connect")

    banner.get_by_role("link", name="Connect").click()
    expect(page).to_have_url(f"{web}/salesforce")
    page.get_by_role("button", name="Connect Salesforce").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("to team Team A?")
    page.get_by_role("button", name="Connect").click()

    expect(page).to_have_url(f"{web}/salesforce")
    expect(page.get_by_role("status").first).to_contain_text("is connected")
    org_id = fake_salesforce.state.org.org_id
    expect(page.locator('[data-field="org_id"]')).to_have_text(org_id)
    expect(page.locator('[data-field="instance_url"]')).to_have_text(fake_salesforce.instance_url)
    expect(page.locator('[data-field="waiting"]')).to_have_text("2")
    expect(page.locator("#salesforce-banner")).to_have_count(0)

    fake_salesforce.configure(validation_rules=(("Task", "Subject", "blocked"),))
    fake_salesforce.add_contact("dana@acme.test")
    flush_team(team_id())
    page.reload()
    row = page.locator("#dead-letters tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("FIELD_CUSTOM_VALIDATION_EXCEPTION")

    fake_salesforce.configure(validation_rules=())  # the admin fixed the rule
    row.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status").first).to_contain_text("1 activity is queued again")
    flush_team(team_id())
    page.reload()
    expect(page.get_by_text("None: Salesforce has refused nothing.")).to_be_visible()
    assert sorted(t["Subject"] for t in fake_salesforce.tasks()) == ["blocked by a rule", "fine"]
    assert not csp.refused, csp.refused
    context.close()
