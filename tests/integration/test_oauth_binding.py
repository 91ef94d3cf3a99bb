"""OAuth connects are finished only by the browser and person who started them, and confirmed.

Issue 18.2: whoever completed a consent link landed their mailbox (Gmail,
Microsoft 365) or org (Salesforce) in the starter's team. Each test runs once
per provider, against the fake provider through the real client libraries,
with separate cookie jars for separate browsers:

- a stranger who finishes the starter's consent link (in their own browser)
  lands nothing anywhere, cannot hand the answer back to the starter, and does
  not spoil the starter's own connect;
- the starter sees "Connect <account> (<provider>) to team <team>?" and only
  Connect saves; Cancel saves nothing (and gives Google's and Salesforce's
  grant back); a replayed callback or confirmation after success is refused;
- the right browser with another person signed in, or nobody, finishes nothing.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import Settings, get_settings
from tests.conftest import ApiClient, create_user
from tests.integration.oauth_browsers import (
    OWNER,
    Browser,
    GmailProvider,
    GraphProvider,
    Provider,
    SalesforceProvider,
    confirm_url_of,
    owner_api,
    text_of,
)
from tests.integration.test_feed import PASSWORD

pytestmark = [
    pytest.mark.integration,
    # The binding lives in Redis and the session; one database is enough here
    # (test_provider_*.py and test_salesforce_auth.py connect on both).
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

STRANGER = "someone@team-b.test"
STARTERS_ACCOUNT = "rep@team-a.test"
STRANGERS_ACCOUNT = "victim@elsewhere.test"


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> ApiClient:
    return owner_api(app, client)


@pytest.fixture(params=["gmail", "graph", "salesforce"])
def provider(
    request: pytest.FixtureRequest, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> Provider:
    if request.param == "gmail":
        return GmailProvider(request.getfixturevalue("fake_gmail"))
    if request.param == "graph":
        return GraphProvider(request.getfixturevalue("fake_graph"))
    org = request.getfixturevalue("fake_salesforce")
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", org.instance_url)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", org.oauth["client_id"])
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", org.oauth["client_secret"])
    get_settings.cache_clear()
    return SalesforceProvider(org)


@pytest.fixture
def stranger(app: Flask) -> Browser:
    """Another person, signed in to their own team in their own browser."""
    create_user(app, STRANGER, "Team B", "--password", PASSWORD)
    return Browser(app, STRANGER)


def subject(provider: Provider, account: str) -> str:
    if provider.kind == "salesforce":
        return f"as {account} to team Team A?"
    return f"Connect {account} ({provider.label}) to team Team A?"


def test_a_stranger_finishing_the_starters_consent_link_lands_nothing(
    app: Flask, api: ApiClient, provider: Provider, stranger: Browser
) -> None:
    starter = Browser(app, OWNER)
    consent_url = starter.consent_link(provider.start(api))
    victim = provider.new_account(STRANGERS_ACCOUNT)

    # The starter sends the consent link on; the stranger approves with their own account.
    answer = provider.consent(consent_url, victim)
    refused = stranger.come_back(answer)
    assert refused.status_code == 403, text_of(refused)
    assert "started in another browser" in text_of(refused)
    assert provider.connected("Team A") == [] and provider.connected("Team B") == []

    # Told "another browser", the stranger pastes the address back to the starter: refused.
    pasted = starter.come_back(answer)
    assert pasted.status_code in (400, 403), text_of(pasted)
    assert "nothing was connected" in text_of(pasted)
    assert provider.connected("Team A") == []

    # The stranger's attempts did not spoil the starter's own connect.
    own = provider.consent(consent_url, provider.new_account(STARTERS_ACCOUNT))
    page = starter.come_back(own)
    assert page.status_code == 200 and subject(provider, STARTERS_ACCOUNT) in text_of(page)
    assert provider.connected("Team A") == []  # not before Connect
    starter.follow(starter.answer(page, "connect"))
    assert provider.connected("Team A") == [STARTERS_ACCOUNT]
    assert provider.connected("Team B") == []


def test_the_starter_sees_what_would_connect_and_only_connect_saves(
    app: Flask, api: ApiClient, provider: Provider
) -> None:
    starter = Browser(app, OWNER)
    account = provider.new_account(STARTERS_ACCOUNT)
    page = starter.come_back(provider.consent(starter.consent_link(provider.start(api)), account))
    shown = text_of(page)
    assert page.status_code == 200, shown
    assert subject(provider, account) in shown
    assert f"signed in as {OWNER}" in shown
    assert "token" not in shown.replace("csrf_token", "").lower()  # tokens never in the page
    assert provider.connected("Team A") == []

    no_csrf = starter.client.post(confirm_url_of(page), data={"action": "connect"})
    assert no_csrf.status_code == 400 and provider.connected("Team A") == []

    done = starter.follow(starter.answer(page, "connect"))
    assert done.status_code == 200, text_of(done)
    assert provider.connected("Team A") == [account]


def test_cancel_saves_nothing_and_gives_the_grant_back(
    app: Flask, api: ApiClient, provider: Provider
) -> None:
    starter = Browser(app, OWNER)
    account = provider.new_account(STARTERS_ACCOUNT)
    page = starter.come_back(provider.consent(starter.consent_link(provider.start(api)), account))
    assert page.status_code == 200 and provider.granted(account)
    cancelled = starter.answer(page, "cancel")
    assert cancelled.status_code == 200, text_of(cancelled)
    assert "nothing was saved" in text_of(cancelled)
    assert provider.connected("Team A") == []
    if provider.kind != "graph":  # Microsoft has no per-grant revocation
        assert not provider.granted(account)
    # Connect after Cancel: the proposal is gone.
    late = starter.client.post(
        starter.confirm_url, data={"action": "connect", "csrf_token": starter.csrf()}
    )
    assert late.status_code == 400 and provider.connected("Team A") == []


def test_a_replay_after_success_is_refused(app: Flask, api: ApiClient, provider: Provider) -> None:
    starter = Browser(app, OWNER)
    account = provider.new_account(STARTERS_ACCOUNT)
    answer = provider.consent(starter.consent_link(provider.start(api)), account)
    page = starter.come_back(answer)
    starter.follow(starter.answer(page, "connect"))
    assert provider.connected("Team A") == [account]

    replayed = starter.come_back(answer)
    assert replayed.status_code == 400
    assert "expired or was already used" in text_of(replayed)
    again = starter.client.post(
        starter.confirm_url, data={"action": "connect", "csrf_token": starter.csrf()}
    )
    assert again.status_code == 400 and "already used" in text_of(again)
    assert provider.connected("Team A") == [account]


def test_the_right_browser_with_someone_else_or_nobody_signed_in_finishes_nothing(
    app: Flask, api: ApiClient, provider: Provider
) -> None:
    create_user(app, "colleague@team-a.test", "Team A", "--password", PASSWORD)
    starter = Browser(app, OWNER)
    consent_url = starter.consent_link(provider.start(api))
    account = provider.new_account(STARTERS_ACCOUNT)

    starter.sign_out()
    signed_out = starter.come_back(provider.consent(consent_url, account))
    assert signed_out.status_code == 401 and "not signed in" in text_of(signed_out)

    starter.sign_in("colleague@team-a.test")  # a teammate at the same computer
    other = starter.come_back(provider.consent(consent_url, account))
    assert other.status_code == 403 and "another Sightline user" in text_of(other)
    assert provider.connected("Team A") == []

    starter.sign_out()
    starter.sign_in(OWNER)  # the starter, back: the flow is still theirs to finish
    page = starter.come_back(provider.consent(consent_url, account))
    assert page.status_code == 200 and subject(provider, account) in text_of(page)
