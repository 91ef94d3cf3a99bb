"""OAuth connects are finished only by the browser and person who started them, and confirmed.

Otherwise whoever completed a consent link would land their mailbox (Gmail,
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


# -- the start link and the confirm page (Gmail stands for all three) --------------------


@pytest.fixture
def gmail(env: Settings, request: pytest.FixtureRequest) -> GmailProvider:
    return GmailProvider(request.getfixturevalue("fake_gmail"))


def test_the_start_link_is_the_starters_alone_and_opens_in_one_browser(
    app: Flask, api: ApiClient, gmail: GmailProvider, stranger: Browser
) -> None:
    link = gmail.start(api)
    assert link.startswith("http://localhost:5000/connect/start/")  # ours, not Google's

    # Another user: refused, and the link still works for the starter afterwards.
    refused = stranger.get(link)
    assert refused.status_code == 403 and "another Sightline user" in text_of(refused)
    assert "accounts.google" not in text_of(refused) and "oauth2" not in text_of(refused)

    # Signed out: sent to sign in, and back to the link after.
    starter = Browser(app)
    to_signin = starter.get(link)
    assert to_signin.status_code == 302 and "/signin?next=/connect/start/" in to_signin.location
    token = starter.csrf_from_signin()
    back = starter.client.post(
        to_signin.location, data={"email": OWNER, "password": PASSWORD, "csrf_token": token}
    )
    assert back.status_code == 302 and back.location == _path(link)
    consent_url = starter.open_start(link)
    assert starter.open_start(link) == consent_url  # the same browser may open it again

    # The same user in a second browser: the flow is bound to the first.
    elsewhere = Browser(app, OWNER).get(link)
    assert elsewhere.status_code == 409 and "already opened in another browser" in text_of(
        elsewhere
    )
    page = starter.come_back(gmail.consent(consent_url, gmail.new_account(STARTERS_ACCOUNT)))
    assert subject(gmail, STARTERS_ACCOUNT) in text_of(page)


def test_a_leaked_confirm_page_answers_only_its_browser_and_person(
    app: Flask, api: ApiClient, gmail: GmailProvider, stranger: Browser
) -> None:
    starter = Browser(app, OWNER)
    page = starter.come_back(
        gmail.consent(starter.consent_link(gmail.start(api)), gmail.new_account(STARTERS_ACCOUNT))
    )
    confirm = confirm_url_of(page)
    assert stranger.get(confirm).status_code == 403
    taken = stranger.client.post(confirm, data={"action": "connect", "csrf_token": stranger.csrf()})
    assert taken.status_code == 403 and gmail.connected("Team B") == []
    same_person_other_browser = Browser(app, OWNER)
    assert same_person_other_browser.get(confirm).status_code == 403
    odd = starter.client.post(confirm, data={"action": "maybe", "csrf_token": starter.csrf()})
    assert odd.status_code == 400 and "Choose Connect or Cancel" in text_of(odd)
    # None of that used the proposal up.
    starter.follow(starter.answer(page, "connect"))
    assert gmail.connected("Team A") == [STARTERS_ACCOUNT]


def test_unknown_expired_or_malformed_answers_are_refused_plainly(
    app: Flask, api: ApiClient, gmail: GmailProvider
) -> None:
    starter = Browser(app, OWNER)
    for path in (
        "/connect/start/not-a-start-link-at-all-0123",
        "/connect/gmail/callback?code=x&state=made-up",
        "/connect/graph/callback?relay=not-a-relay-id-0123456789",
        "/connect/confirm/not-a-confirmation-0123456789",
    ):
        answer = starter.get(path)
        assert answer.status_code == 400, path
        assert "expired or was already used" in text_of(answer), path
        assert "Cache-Control" in answer.headers and "no-store" in answer.headers["Cache-Control"]
    huge = starter.client.post("/connect/graph/callback", data={"code": "x" * 5000, "state": "s"})
    assert huge.status_code == 400 and "could not be read" in text_of(huge)
    many = starter.get("/connect/gmail/callback?" + "&".join(f"f{i}=1" for i in range(30)))
    assert many.status_code == 400
    # A relay id is one-time and bound to its provider.
    relayed = starter.client.post("/connect/graph/callback", data={"code": "c", "state": "s"})
    assert starter.get(relayed.location.replace("/graph/", "/gmail/")).status_code == 400
    assert starter.get(relayed.location).status_code == 400  # used up by the first try


def _path(link: str) -> str:
    return link.removeprefix("http://localhost:5000")
