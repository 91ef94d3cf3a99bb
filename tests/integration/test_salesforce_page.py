"""The Salesforce page and the banner, as an admin and a member see them, against the fake org.

The fake Salesforce speaks TLS and the real wire format; simple-salesforce and
requests are the real clients. The admin connects with the page's button
through the real OAuth flow (the fake approves at once, as the consenting
user), confirms, and lands on the page; the org's API use comes from the
fake's /limits, read by the real job through an RQ worker on the real Redis.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from rq import SimpleWorker
from sqlalchemy import select

from config import Settings, get_settings, queues
from core.db import session_scope
from core.events import queue_salesforce_task
from core.models import OutboxStatus, SalesforceOutbox, Team
from core.redis import get_redis
from tests.conftest import create_user
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.oauth_browsers import Browser, SalesforceProvider
from tests.integration.test_feed import PASSWORD, csrf_from
from worker.queueing import get_queue
from worker.salesforce.outbox import flush_team

ADMIN = "admin@team-a.test"
MEMBER = "member@team-a.test"
CONSENTING = "sf-admin@acme.example"


@pytest.fixture
def org(
    fake_salesforce: FakeSalesforce, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> FakeSalesforce:
    """A Connected App at the fake; no operator-level org, so the team must connect its own."""
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", fake_salesforce.instance_url)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", fake_salesforce.oauth["client_id"])
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", fake_salesforce.oauth["client_secret"])
    get_settings.cache_clear()
    return fake_salesforce


def team_id() -> int:
    with session_scope() as session:
        return int(session.scalars(select(Team.id).where(Team.name == "Team A")).one())


def owe(subjects: list[str], email: str = "dana@acme.test") -> None:
    with session_scope() as session:
        for subject in subjects:
            queue_salesforce_task(
                session,
                team_id=team_id(),
                key=f"task:reply:page:{subject}",
                kind="task_reply",
                who_email=email,
                event_id=None,
                payload={"subject": subject, "description": "Thanks"},
            )


def text(answer: Any) -> str:
    return str(answer.get_data(as_text=True))


def banner(page: str) -> str | None:
    found = re.search(r'<p class="site-banner"[^>]*>(.*?)</p>', page, re.S)
    return re.sub(r"<[^>]+>", "", found.group(1)).strip() if found else None


def post(browser: Browser, path: str, data: dict[str, str]) -> Any:
    token = csrf_from(text(browser.client.get("/salesforce")))
    return browser.client.post(path, data={"csrf_token": token, **data})


def connect_with_the_button(browser: Browser, org: FakeSalesforce) -> Any:
    """Press Connect Salesforce (production), consent at the fake, confirm; the landing page."""
    started = post(browser, "/salesforce/connect", {"login_host": "production"})
    assert started.status_code == 303, text(started)
    provider = SalesforceProvider(org)
    consent = browser.open_start(started.headers["Location"])
    confirm = browser.come_back(provider.consent(consent, provider.new_account(CONSENTING)))
    assert f"as {CONSENTING} to team Team A?" in text(confirm)
    return browser.follow(browser.answer(confirm, "connect"))


def status_of(app: Flask, token: str) -> Any:
    """GET /api/v1/salesforce/status with `token` (the answer, its `json` typed loosely)."""
    return app.test_client().get(
        "/api/v1/salesforce/status", headers={"Authorization": f"Bearer {token}"}
    )


def run_salesforce_jobs() -> None:
    """An RQ worker's burst on the Salesforce queue (in this process, on the real Redis)."""
    SimpleWorker([get_queue(queues.SALESFORCE)], connection=get_redis()).work(burst=True)


def test_banner_until_connected_then_status_and_api_use_from_the_orgs_limits(
    app: Flask, org: FakeSalesforce
) -> None:
    token = create_user(app, ADMIN, "Team A", "--password", PASSWORD)
    member_token = create_user(app, MEMBER, "Team A", "--password", PASSWORD)
    owe(["one", "two", "three"])
    admin, member = Browser(app, ADMIN), Browser(app, MEMBER)

    # Not connected: every page says so, an admin with a link, a member with whom to ask.
    assert banner(text(admin.client.get("/feed"))) == (
        "3 activities are waiting: Salesforce is not connected — Connect"
    )
    said = banner(text(member.client.get("/sequences")))
    assert said is not None and said.startswith("3 activities are waiting")
    assert f"Ask an admin of your team: {ADMIN}" in said
    assert member.client.get("/salesforce").status_code == 403
    refused = status_of(app, member_token)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "admin_only"
    page = text(admin.client.get("/salesforce"))
    assert 'data-reason="not_connected"' in page and "<strong>3</strong>" in page

    # A My Domain that is not Salesforce's is refused before anyone leaves the site.
    refused = post(
        admin, "/salesforce/connect", {"login_host": "my_domain", "my_domain": "evil.test"}
    )
    assert refused.status_code == 422 and 'id="f-my_domain-error"' in text(refused)

    landed = connect_with_the_button(admin, org)
    page = text(landed)
    assert landed.status_code == 200 and landed.request.path == "/salesforce", page
    assert "is connected." in page
    assert f'<dd data-field="org_id">{org.state.org.org_id}</dd>' in page
    assert f'<dd data-field="instance_url">{org.instance_url}</dd>' in page
    assert f'<dd data-field="username">{CONSENTING}</dd>' in page
    assert '<dd data-field="waiting">3</dd>' in page
    assert banner(text(admin.client.get("/feed"))) is None
    assert banner(text(member.client.get("/feed"))) is None

    # The page asked a worker for the org's /limits; the chart shows what the fake said.
    org.set_api_usage(41_234, 100_000)
    assert "Asking Salesforce" in page
    run_salesforce_jobs()
    used, maximum = org.api_usage
    assert used == 41_235  # the one /limits call this cost
    page = text(admin.client.get("/salesforce"))
    assert f'data-used="{used}" data-max="{maximum}"' in page
    assert 'data-share="80"' in page
    assert "41,235 of 100,000 daily API calls used (41 %)" in page
    status = status_of(app, token).json
    assert (status["org_id"], status["username"], status["waiting"]) == (
        org.state.org.org_id,
        CONSENTING,
        3,
    )
    assert (status["usage"]["used"], status["usage"]["max"]) == (used, maximum)
    assert [r["code"] for r in status["reasons"]] == []

    org.add_contact("dana@acme.test")
    owe(["four"], email="nobody@acme.test")  # nobody in Salesforce has this address
    flush_team(team_id())
    page = text(admin.client.get("/salesforce"))
    assert '<dd data-field="waiting">1</dd>' in page
    assert '<li data-reason="no_contact"><strong>1</strong>' in page
    assert '<dd data-field="last_write_at"><time' in page
    assert sorted(t["Subject"] for t in org.tasks()) == ["one", "three", "two"]

    # Settings: a bad share is refused with the field named, a good one kept.
    bad = post(admin, "/salesforce/settings", {"budget_share": "0"})
    assert bad.status_code == 422 and "Budget share: a whole number" in text(bad)
    post(admin, "/salesforce/settings", {"budget_share": "40", "create_leads": "on"})
    page = text(admin.client.get("/salesforce"))
    assert 'data-share="40"' in page and 'data-reason="over_budget"' in page
    assert 'id="f-create_leads" name="create_leads" type="checkbox" checked' in page

    # Disconnected: the banner is back for the activities owed meanwhile.
    owe(["five"])
    post(admin, "/salesforce/disconnect", {})
    assert banner(text(admin.client.get("/feed"))) == (
        "2 activities are waiting: Salesforce is not connected — Connect"
    )


def test_a_dead_letter_retried_from_the_page_lands_once(app: Flask, org: FakeSalesforce) -> None:
    create_user(app, ADMIN, "Team A", "--password", PASSWORD)
    create_user(app, "b@team-b.test", "Team B", "--password", PASSWORD)
    admin = Browser(app, ADMIN)
    connect_with_the_button(admin, org)
    org.configure(validation_rules=(("Task", "Subject", "blocked"),))
    org.add_contact("dana@acme.test")
    owe(["fine", "blocked one", "blocked two"])
    flush_team(team_id())

    page = text(admin.client.get("/salesforce"))
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in page and 'data-reason="errors"' in page
    with session_scope() as session:
        failed = list(
            session.scalars(
                select(SalesforceOutbox.id)
                .where(SalesforceOutbox.status == OutboxStatus.FAILED)
                .order_by(SalesforceOutbox.id)
            )
        )
    assert len(failed) == 2

    # Another team's admin cannot retry it: nothing happens to Team A's row.
    stranger = Browser(app, "b@team-b.test")
    post(stranger, "/salesforce/dead-letters/retry", {"outbox_id": str(failed[0])})
    with session_scope() as session:
        assert session.get_one(SalesforceOutbox, failed[0]).status == OutboxStatus.FAILED

    org.configure(validation_rules=())  # the admin fixed the rule in Salesforce
    retried = admin.follow(
        post(admin, "/salesforce/dead-letters/retry", {"outbox_id": str(failed[0])})
    )
    assert "1 activity is queued again" in text(retried)
    flush_team(team_id())
    flush_team(team_id())  # a second flush finds nothing more to write
    subjects = [t["Subject"] for t in org.tasks()]
    assert sorted(subjects) == ["blocked one", "fine"]

    admin.follow(post(admin, "/salesforce/dead-letters/retry", {"all": "1"}))
    flush_team(team_id())
    assert sorted(t["Subject"] for t in org.tasks()) == ["blocked one", "blocked two", "fine"]
    assert "None: Salesforce has refused nothing." in text(admin.client.get("/salesforce"))
