"""Connecting orgs and keeping their sessions alive, against the TLS fake org.

The OAuth web-server flow is walked as a person would: our API hands out a
start link, the same user opens it signed in, the fake (Salesforce) approves
and redirects to our callback, the person confirms the org shown, and the
team's Tasks then go to that org. Expired sessions are renewed once
(a refresh token, a new JWT, a new SOAP login), rotated refresh tokens are
saved, concurrent renewals ask Salesforce once, and a refused refresh holds
the team's writes until a person reconnects.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from config import Settings, get_settings
from core.crypto import decrypt_json
from core.db import session_scope
from core.events import queue_salesforce_task
from core.models import Role, SalesforceConnection, SalesforceOutbox, Team, User
from tests.conftest import ApiClient
from tests.fakes.salesforce import FakeSalesforce, generate_rsa_keypair
from tests.integration.oauth_browsers import OWNER, Browser, Callback, owner_api, text_of
from worker.salesforce.auth import ConnectionTokens
from worker.salesforce.outbox import flush_team

TOKEN_PATH = "/services/oauth2/token"


@pytest.fixture
def org(
    fake_salesforce: FakeSalesforce, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> FakeSalesforce:
    """The fake org, with our Connected App configured and no settings-level org."""
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", fake_salesforce.instance_url)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", fake_salesforce.oauth["client_id"])
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", fake_salesforce.oauth["client_secret"])
    get_settings.cache_clear()
    return fake_salesforce


def json_of(response: TestResponse) -> Any:
    body = response.get_json()
    assert body is not None
    return body


def team_id(name: str = "Team A") -> int:
    with session_scope() as session:
        return int(session.scalars(select(Team.id).where(Team.name == name)).one())


def connection() -> SalesforceConnection:
    with session_scope() as session:
        row = session.scalars(select(SalesforceConnection)).one()
        session.expunge(row)
        return row


def owe(team: int, n: int, email: str = "dana@acme.test") -> None:
    with session_scope() as session:
        queue_salesforce_task(
            session,
            team_id=team,
            key=f"task:sent:{n}",
            kind="task_sent",
            who_email=email,
            event_id=None,
            payload={"subject": f"Email: {n}", "description": "Hi", "activity_date": None},
        )


def outbox() -> list[tuple[str, int]]:
    with session_scope() as session:
        return [
            (r.status, r.attempts)
            for r in session.scalars(select(SalesforceOutbox).order_by(SalesforceOutbox.id))
        ]


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> ApiClient:
    return owner_api(app, client)


def connect_oauth(api: ApiClient, client: FlaskClient, org: FakeSalesforce) -> dict[str, object]:
    """Walk the web-server flow: start link → the org approves → our callback → Connect."""
    started = api.post("/api/v1/salesforce/connect", {"kind": "oauth"})
    assert started.status_code == 200, started.json
    link = started.json["authorize_url"]
    assert link.startswith("http://localhost:5000/connect/start/")
    browser = Browser(api.client.application, OWNER)
    url = browser.open_start(link)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{org.instance_url}/services/oauth2/authorize?")
    assert query["redirect_uri"] == ["http://localhost:5000/api/v1/salesforce/oauth/callback"]
    assert "refresh_token" in query["scope"][0]
    approved = requests.get(url, allow_redirects=False, timeout=10)
    assert approved.status_code == 302
    back = urlsplit(approved.headers["Location"])
    assert back.path == "/api/v1/salesforce/oauth/callback"
    confirm = browser.come_back(Callback("GET", approved.headers["Location"], {}))
    shown = text_of(confirm)
    assert confirm.status_code == 200, shown
    org_id = org.state.org.org_id
    assert f"Connect Salesforce org {org_id} as {org.oauth['username']} to team Team A?" in shown
    connected = browser.answer(confirm, "connect")
    assert connected.status_code == 303 and connected.headers["Location"] == "/salesforce"
    landed = browser.follow(connected)  # the Salesforce page, saying so
    assert landed.status_code == 200 and "is connected." in landed.get_data(as_text=True)
    answer = api.get("/api/v1/salesforce/connection")
    body = answer.json
    assert isinstance(body, dict)
    return body


def test_oauth_web_server_flow_connects_the_team_org(
    api: ApiClient, client: FlaskClient, org: FakeSalesforce
) -> None:
    connected = connect_oauth(api, client, org)
    assert (connected["kind"], connected["status"], connected["ready"]) == ("oauth", "active", True)
    assert connected["instance_url"] == org.instance_url
    assert connected["org_id"] and str(connected["org_id"]).startswith("00D")
    assert "refresh_token" not in str(connected) and "access_token" not in str(connected)

    row = connection()
    stored = decrypt_json(row.credentials_encrypted or "")
    assert stored["refresh_token"] in org.state.tokens.refresh_tokens()
    assert stored["refresh_token"] not in (row.credentials_encrypted or "")  # encrypted at rest
    assert api.get("/api/v1/salesforce/connection").json["kind"] == "oauth"

    contact = org.add_contact("dana@acme.test")
    owe(team_id(), 1)
    assert flush_team(team_id()).done == 1
    assert [t["WhoId"] for t in org.tasks()] == [contact]


def test_an_admin_made_a_member_mid_flow_does_not_finish_it(
    api: ApiClient, client: FlaskClient, org: FakeSalesforce
) -> None:
    """Starting needs an admin; the confirm checks again, and the grant is revoked."""
    started = api.post("/api/v1/salesforce/connect", {"kind": "oauth"})
    browser = Browser(api.client.application, OWNER)
    approved = requests.get(
        browser.open_start(started.json["authorize_url"]), allow_redirects=False, timeout=10
    )
    confirm = browser.come_back(Callback("GET", approved.headers["Location"], {}))
    assert confirm.status_code == 200, text_of(confirm)
    assert org.state.tokens.refresh_tokens()  # the org granted one
    with session_scope() as session:
        owner = session.scalars(select(User).where(User.email == OWNER)).one()
        owner.role = Role.MEMBER
    refused = browser.answer(confirm, "connect")
    assert refused.status_code == 403
    assert "no longer one: nothing was saved" in text_of(refused)
    with session_scope() as session:
        assert session.scalars(select(SalesforceConnection)).all() == []
    assert not org.state.tokens.refresh_tokens()  # revoked, as a Cancel does


def test_expired_session_is_refreshed_once_and_the_rotated_token_saved(
    api: ApiClient, client: FlaskClient, org: FakeSalesforce
) -> None:
    org.configure(rotate_refresh_tokens=True)
    connect_oauth(api, client, org)
    before = decrypt_json(connection().credentials_encrypted or "")["refresh_token"]
    org.add_contact("dana@acme.test")
    owe(team_id(), 1)
    org.expire_token()
    grants = org.call_count(TOKEN_PATH)

    assert flush_team(team_id()).done == 1
    assert org.call_count(TOKEN_PATH) == grants + 1
    after = decrypt_json(connection().credentials_encrypted or "")["refresh_token"]
    assert after != before
    assert org.state.tokens.refresh_tokens() == [after]  # the old one died on rotation
    assert connection().token_version >= 2


def test_concurrent_renewals_ask_salesforce_once(
    api: ApiClient, client: FlaskClient, org: FakeSalesforce
) -> None:
    org.configure(rotate_refresh_tokens=True)
    connect_oauth(api, client, org)
    row = connection()
    stale = str(decrypt_json(row.credentials_encrypted or "")["access_token"])
    org.expire_token()
    grants = org.call_count(TOKEN_PATH)
    sessions: list[str] = []

    def renew() -> None:
        tokens = ConnectionTokens(row.id, get_settings().salesforce)
        sessions.append(tokens.renew(stale).access_token)  # an exception leaves one short

    threads = [threading.Thread(target=renew) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(sessions) == 8 and len(set(sessions)) == 1
    assert org.call_count(TOKEN_PATH) == grants + 1
    stored = decrypt_json(connection().credentials_encrypted or "")
    assert stored["access_token"] == sessions[0]
    assert org.state.tokens.refresh_tokens() == [stored["refresh_token"]]


def test_refused_refresh_holds_writes_until_reconnected(
    api: ApiClient, client: FlaskClient, org: FakeSalesforce
) -> None:
    connect_oauth(api, client, org)
    refresh = decrypt_json(connection().credentials_encrypted or "")["refresh_token"]
    org.add_contact("dana@acme.test")
    owe(team_id(), 1)
    org.state.tokens.revoke(refresh)  # an admin revoked the app in Salesforce
    org.expire_token()

    stats = flush_team(team_id())
    assert stats.done == 0
    assert outbox() == [("pending", 0)]  # held, no attempt spent
    shown = api.get("/api/v1/salesforce/connection").json
    assert (shown["status"], shown["ready"]) == ("needs_reconnect", False)
    assert "invalid_grant" in shown["status_reason"]
    assert flush_team(team_id()).claimed == 0  # nothing is tried until a person acts

    connect_oauth(api, client, org)
    assert flush_team(team_id()).done == 1
    assert len(org.tasks()) == 1


def test_jwt_bearer_connection_signs_a_new_assertion_on_expiry(
    api: ApiClient, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_pem, public_pem = generate_rsa_keypair()
    org.register_app("sightline-jwt-app", "unused-secret", jwt_public_key_pem=public_pem)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", "sightline-jwt-app")
    monkeypatch.setenv("SALESFORCE_JWT_PRIVATE_KEY", private_pem.decode())
    # The operator lists who each team may be (tests/security/test_salesforce_hosts.py
    # checks that nobody else is signed for).
    team = team_id()
    allowed = f"{team}:nobody@example.com,{team}:{org.oauth['username']}"
    monkeypatch.setenv("SALESFORCE_JWT_ALLOWED", allowed)
    get_settings.cache_clear()

    refused = api.post(
        "/api/v1/salesforce/connect", {"kind": "jwt", "username": "nobody@example.com"}
    )
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "salesforce_refused"
    connected = api.post(
        "/api/v1/salesforce/connect", {"kind": "jwt", "username": org.oauth["username"]}
    )
    assert connected.status_code == 201, connected.json
    assert connected.json["kind"] == "jwt"

    org.add_contact("dana@acme.test")
    owe(team_id(), 1)
    org.expire_token()
    grants = org.call_count(TOKEN_PATH)
    assert flush_team(team_id()).done == 1
    assert org.call_count(TOKEN_PATH) == grants + 1


def test_settings_org_with_username_and_password_logs_in_through_soap(
    org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch, env: Settings
) -> None:
    monkeypatch.delenv("SALESFORCE_CLIENT_ID")
    monkeypatch.delenv("SALESFORCE_CLIENT_SECRET")
    monkeypatch.setenv("SALESFORCE_USERNAME", org.oauth["username"])
    monkeypatch.setenv("SALESFORCE_PASSWORD", org.oauth["password"])
    monkeypatch.setenv("SALESFORCE_SECURITY_TOKEN", org.oauth["security_token"])
    get_settings.cache_clear()
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        team_pk = team.id
    org.add_contact("dana@acme.test")
    owe(team_pk, 1)
    assert flush_team(team_pk).done == 1
    assert org.call_count("/services/Soap/u/") == 1
    owe(team_pk, 2)
    assert flush_team(team_pk).done == 1
    assert org.call_count("/services/Soap/u/") == 1  # the session is kept between flushes
    org.expire_token()
    owe(team_pk, 3)
    assert flush_team(team_pk).done == 1
    assert org.call_count("/services/Soap/u/") == 2  # logged in again, once


def test_wrong_password_is_refused_and_production_refuses_passwords(
    api: ApiClient, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"kind": "password", "username": org.oauth["username"], "password": "wrong"}
    refused = api.post("/api/v1/salesforce/connect", body)
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "salesforce_refused"
    missing = api.post("/api/v1/salesforce/connect", {"kind": "password", "username": "u@x.test"})
    assert missing.status_code == 422
    assert missing.json["error"]["fields"] == {"password": "required for kind password"}

    monkeypatch.setenv("SIGHTLINE_ENV", "production")
    get_settings.cache_clear()
    body["password"] = org.oauth["password"]
    body["security_token"] = org.oauth["security_token"]
    production = api.post("/api/v1/salesforce/connect", body)
    assert production.status_code == 422
    assert production.json["error"]["fields"] == {
        "kind": "password login is for development; use oauth or jwt"
    }


def test_callback_refuses_forged_state_and_reports_a_denial(
    app: Flask, api: ApiClient, org: FakeSalesforce
) -> None:
    browser = Browser(app, OWNER)
    forged = browser.follow(
        browser.client.get("/api/v1/salesforce/oauth/callback?code=abc&state=made-up")
    )
    assert forged.status_code == 400 and "expired or was already used" in text_of(forged)
    link = api.post("/api/v1/salesforce/connect", {"kind": "oauth"}).json["authorize_url"]
    state = parse_qs(urlsplit(browser.open_start(link)).query)["state"][0]
    denied = browser.follow(
        browser.client.get(
            "/api/v1/salesforce/oauth/callback?error=access_denied"
            f"&error_description=end-user+denied&state={state}"
        )
    )
    assert denied.status_code == 400 and "end-user denied" in text_of(denied)
    assert api.get("/api/v1/salesforce/connection").json["kind"] == "default"


def test_oauth_needs_a_connected_app(
    api: ApiClient, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SALESFORCE_CLIENT_SECRET")
    get_settings.cache_clear()
    answer = api.post("/api/v1/salesforce/connect", {"kind": "oauth"})
    assert answer.status_code == 422
    assert "SALESFORCE_CLIENT_SECRET" in answer.json["error"]["fields"]["kind"]
    bad_url = api.post(
        "/api/v1/salesforce/connect",
        {"kind": "jwt", "username": "u@x.test", "login_url": "http://x"},
    )
    assert bad_url.status_code == 422


def test_disconnect_revokes_and_holds_writes(
    api: ApiClient, client: FlaskClient, org: FakeSalesforce
) -> None:
    connect_oauth(api, client, org)
    assert len(org.state.tokens.refresh_tokens()) == 1
    assert (
        api.client.delete(
            "/api/v1/salesforce/connection", headers={"Authorization": f"Bearer {api.token}"}
        ).status_code
        == 204
    )
    assert org.state.tokens.refresh_tokens() == []  # revoked at Salesforce
    assert connection().credentials_encrypted is None
    org.add_contact("dana@acme.test")
    owe(team_id(), 1)
    assert flush_team(team_id()).claimed == 0
    assert outbox() == [("pending", 0)]
    assert api.get("/api/v1/salesforce/connection").json["status"] == "disconnected"
