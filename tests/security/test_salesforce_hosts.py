"""The operator's Salesforce secret and a team's tokens go only to Salesforce.

Hosts: a team's `login_url` may only be Salesforce's login or My Domain hosts
(or the operator's own setting); a token answer's `instance_url` is held to the
same rule before it is stored or used, and a stored one is checked again at
every use, revoke included. A live listener on 127.0.0.1 plays the host a team
(or a forged answer) names: it must never be contacted, so neither the Connected
App's secret nor a bearer token reaches it.

JWT: the JWT bearer flow signs with the operator's key for whoever is named,
so a team may use it only for the usernames the operator lists for that team
in SALESFORCE_JWT_ALLOWED; taking a name off the list stops the renewals.

The org is the TLS fake (tests.fakes.salesforce) set up as the operator would:
SALESFORCE_LOGIN_URL points at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from config import Settings, get_settings
from config.settings import ConfigError, load_settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.events import queue_salesforce_task
from core.models import (
    SalesforceAuthKind,
    SalesforceConnection,
    SalesforceConnectionStatus,
    Team,
    utcnow,
)
from core.outbound import OutboundError
from tests.conftest import ApiClient
from tests.fakes.salesforce import FakeSalesforce, generate_rsa_keypair
from tests.security.listeners import HTTP_ANSWER, Listener
from worker.salesforce.auth import ConnectionTokens
from worker.salesforce.client import SalesforceError
from worker.salesforce.hosts import checked_url, salesforce_session
from worker.salesforce.outbox import flush_team

pytestmark = pytest.mark.integration

TOKEN_PATH = "/services/oauth2/token"

TEAM_HOSTS = (
    "https://login.salesforce.com",
    "https://test.salesforce.com",
    "https://LOGIN.Salesforce.com/",
    "https://login.salesforce.com:443",
    "https://acme.my.salesforce.com",
    "https://acme--uat.my.salesforce.com",
    "https://acme--uat.sandbox.my.salesforce.com",
    "https://acme.develop.my.salesforce.com",
    "https://acme.demo.my.salesforce.com",
    "https://acme.patch.my.salesforce.com",
    "https://acme.scratch.my.salesforce.com",
    "https://acme.trailblaze.my.salesforce.com",
    "https://acme.free.my.salesforce.com",
    "https://na30.salesforce.com",
    "https://cs42.salesforce.com",
)
NOT_SALESFORCE = (
    "https://evil.example",
    "https://salesforce.com",
    "https://my.salesforce.com",
    "https://login.salesforce.com.evil.example",
    "https://acme.my.salesforce.com.evil.example",
    "https://acme.sandbox.my.salesforce.com.evil.example",
    "https://evilsalesforce.com",
    "https://login-salesforce.com",
    "https://acme.my.salesforce.co",
    "https://acme.evil.my.salesforce.com",
    "https://a.b.my.salesforce.com",
    "http://login.salesforce.com",
    "https://login.salesforce.com:8443",
    "https://acme.my.salesforce.com:444",
    "https://user@login.salesforce.com",
    "https://login.salesforce.com@evil.example",
    "https://login.salesforce.com:443@evil.example",
    "https://login.salesforce.com\\@evil.example",
    "https://evil.example\\login.salesforce.com",
    "https://evil.example/login.salesforce.com",
    "https://login.salesforce.com/services/oauth2",
    "https://login.salesforce.com?next=evil",
    "https://login.salesforce.com#evil",
    "https://login.salesforce.com.",
    "https://%6cogin.salesforce.com",
    "https://\uff4cogin.salesforce.com",
    "https://login\u3002salesforce.com",
    "https://xn--login-salesforce-com.evil",
    "https://127.0.0.1",
    "https://[::1]",
    "https://2130706433",
    "https://169.254.169.254",
    "login.salesforce.com",
    "//login.salesforce.com",
    "ftp://login.salesforce.com",
    "https://login.salesforce.com /",
)


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """One engine is enough: these are about where requests go."""
    return sqlite_database_url


@pytest.fixture
def settings_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings for the host rule alone (no services): the default login URL."""
    for name in ("SALESFORCE_LOGIN_URL", "SALESFORCE_INSTANCE_URL", "SALESFORCE_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SIGHTLINE_ENV", "development")
    monkeypatch.setenv("SIGHTLINE_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY", "k" * 40)
    monkeypatch.setenv("SIGHTLINE_ENCRYPTION_KEY", Fernet.generate_key().decode())
    get_settings.cache_clear()


@pytest.fixture
def org(
    fake_salesforce: FakeSalesforce, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> FakeSalesforce:
    """The fake org as the operator configures it, with the Connected App."""
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", fake_salesforce.instance_url)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", fake_salesforce.oauth["client_id"])
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", fake_salesforce.oauth["client_secret"])
    get_settings.cache_clear()
    return fake_salesforce


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener("127.0.0.1", HTTP_ANSWER) as live:
        yield live


def team_id(name: str = "Team A") -> int:
    with session_scope() as session:
        return int(session.scalars(select(Team.id).where(Team.name == name)).one())


def owe(team: int) -> None:
    with session_scope() as session:
        queue_salesforce_task(
            session,
            team_id=team,
            key="task:sent:1",
            kind="task_sent",
            who_email="dana@acme.test",
            event_id=None,
            payload={"subject": "Email: 1", "description": "Hi", "activity_date": None},
        )


def connection() -> SalesforceConnection | None:
    with session_scope() as session:
        row = session.scalar(select(SalesforceConnection))
        if row is not None:
            session.expunge(row)
        return row


# -- the host rule -----------------------------------------------------------------------


@pytest.mark.parametrize("url", TEAM_HOSTS)
def test_salesforce_login_and_my_domain_hosts_are_accepted(url: str, settings_only: None) -> None:
    normalised = checked_url(url, "login_url")
    assert normalised == normalised.lower() and normalised.startswith("https://")
    assert normalised.count("/") == 2 and ":" not in normalised.removeprefix("https:")


@pytest.mark.parametrize("url", NOT_SALESFORCE)
def test_every_other_host_and_spelling_is_refused(url: str, settings_only: None) -> None:
    with pytest.raises(OutboundError, match=r"^login_url: "):
        checked_url(url, "login_url")


def test_the_operators_own_setting_may_point_anywhere(
    settings_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALESFORCE_LOGIN_URL", "https://sf-gateway.corp.example:8443")
    get_settings.cache_clear()
    assert checked_url("https://sf-gateway.corp.example:8443", "login_url") == (
        "https://sf-gateway.corp.example:8443"
    )
    with pytest.raises(OutboundError):
        checked_url("https://sf-gateway.corp.example", "login_url")  # another port: not it


def test_the_session_refuses_lookalikes_of_an_operator_origin(
    settings_only: None, listener: Listener
) -> None:
    session = salesforce_session()
    for url in (
        "https://login.salesforce.com.evil.example/services/oauth2/token",
        f"https://127.0.0.1:{listener.port}/services/oauth2/token",
        f"https://login.salesforce.com@127.0.0.1:{listener.port}/services/oauth2/token",
    ):
        with pytest.raises(OutboundError):
            session.post(url, data={"client_secret": "s3cret"}, timeout=5)
    assert not listener.connections


# -- hosts, through the API --------------------------------------------------------------


def test_connect_refuses_a_login_url_that_is_not_salesforce(
    api: ApiClient, org: FakeSalesforce, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_pem, public_pem = generate_rsa_keypair()
    org.register_app("sightline-jwt-app", "unused-secret", jwt_public_key_pem=public_pem)
    monkeypatch.setenv("SALESFORCE_JWT_PRIVATE_KEY", private_pem.decode())
    monkeypatch.setenv("SALESFORCE_JWT_ALLOWED", f"{team_id()}:{org.oauth['username']}")
    get_settings.cache_clear()
    here = f"https://127.0.0.1:{listener.port}"
    failures = []
    for login_url in (here, f"{here}/", f"https://localhost:{listener.port}", *NOT_SALESFORCE):
        for kind in ("oauth", "jwt", "password"):
            body = {"kind": kind, "login_url": login_url, "username": org.oauth["username"]}
            if kind == "password":
                body["password"] = org.oauth["password"]
            answer = api.post("/api/v1/salesforce/connect", body)
            error = (answer.json or {}).get("error", {})
            if answer.status_code != 422 or "login_url" not in error.get("fields", {}):
                failures.append((kind, login_url, answer.status_code, error))
    assert failures == []
    assert not listener.connections  # the Connected App's secret went nowhere
    row = connection()
    assert row is None or row.auth_kind == SalesforceAuthKind.DEFAULT


def test_a_token_answer_naming_another_instance_is_refused(
    api: ApiClient, org: FakeSalesforce, listener: Listener
) -> None:
    org.state.tokens.instance_url = f"https://127.0.0.1:{listener.port}"  # a forged answer
    body = {
        "kind": "password",
        "username": org.oauth["username"],
        "password": org.oauth["password"],
        "security_token": org.oauth["security_token"],
    }
    answer = api.post("/api/v1/salesforce/connect", body)
    assert answer.status_code == 422, answer.json
    assert answer.json["error"]["code"] == "salesforce_refused"
    assert "instance_url" in answer.json["error"]["message"]
    row = connection()
    assert row is None or row.auth_kind == SalesforceAuthKind.DEFAULT
    owe(team_id())
    flush_team(team_id())
    assert not listener.connections  # no bearer token was sent there


def test_a_stored_foreign_instance_is_refused_at_use_and_revoke(
    api: ApiClient, org: FakeSalesforce, listener: Listener
) -> None:
    """A row saved before hosts were checked: used, renewed or revoked, it goes nowhere."""
    elsewhere = f"https://127.0.0.1:{listener.port}"
    team = team_id()
    with session_scope() as session:
        session.add(
            SalesforceConnection(
                team_id=team,
                auth_kind=SalesforceAuthKind.OAUTH,
                login_url=elsewhere,
                instance_url=elsewhere,
                credentials_encrypted=encrypt_json(
                    {"access_token": "00Dstolen!token", "refresh_token": "5Aep-refresh"}
                ),
                status=SalesforceConnectionStatus.ACTIVE,
                updated_at=utcnow(),
            )
        )
    owe(team)
    stats = flush_team(team)
    assert stats.done == 0
    row = connection()
    assert row is not None and row.status == SalesforceConnectionStatus.NEEDS_RECONNECT
    assert "instance_url" in (row.status_reason or "")
    with session_scope() as session:  # made active again, with no session kept:
        stored = session.scalar(select(SalesforceConnection))
        assert stored is not None
        stored.status = SalesforceConnectionStatus.ACTIVE
        stored.instance_url = None
        connection_id = stored.id
    with pytest.raises(SalesforceError) as refresh:  # ...a refresh at the stored login URL
        ConnectionTokens(connection_id, get_settings().salesforce).current()
    assert refresh.value.kind == "auth" and "login URL" in str(refresh.value)
    deleted = api.client.delete(
        "/api/v1/salesforce/connection", headers={"Authorization": f"Bearer {api.token}"}
    )
    assert deleted.status_code == 204
    assert not listener.connections  # neither the token, the refresh nor the revoke


# -- JWT only for the usernames the operator lists ----------------------------------------


def test_jwt_signs_only_for_usernames_the_operator_lists_for_the_team(
    api: ApiClient, org: FakeSalesforce, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_pem, public_pem = generate_rsa_keypair()
    org.register_app("sightline-jwt-app", "unused-secret", jwt_public_key_pem=public_pem)
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", "sightline-jwt-app")
    monkeypatch.setenv("SALESFORCE_JWT_PRIVATE_KEY", private_pem.decode())
    team = team_id()
    username = org.oauth["username"]
    grants = org.call_count(TOKEN_PATH)
    for allowed in (None, f"{team + 1}:{username}", f"{team}:someone.else@acme.test"):
        if allowed is None:
            monkeypatch.delenv("SALESFORCE_JWT_ALLOWED", raising=False)
        else:
            monkeypatch.setenv("SALESFORCE_JWT_ALLOWED", allowed)
        get_settings.cache_clear()
        refused = api.post("/api/v1/salesforce/connect", {"kind": "jwt", "username": username})
        assert refused.status_code == 403, (allowed, refused.json)
        assert refused.json["error"]["code"] == "forbidden"
        assert "SALESFORCE_JWT_ALLOWED" in refused.json["error"]["message"]
    assert org.call_count(TOKEN_PATH) == grants  # nothing was signed, nothing sent

    monkeypatch.setenv("SALESFORCE_JWT_ALLOWED", f"{team}:{username.upper()}")
    get_settings.cache_clear()
    connected = api.post("/api/v1/salesforce/connect", {"kind": "jwt", "username": username})
    assert connected.status_code == 201, connected.json

    # The operator takes it back: the next renewal is refused, the org needs reconnecting.
    monkeypatch.setenv("SALESFORCE_JWT_ALLOWED", f"{team + 1}:{username}")
    get_settings.cache_clear()
    org.expire_token()
    grants = org.call_count(TOKEN_PATH)
    owe(team)
    assert flush_team(team).done == 0
    assert org.call_count(TOKEN_PATH) == grants
    row = connection()
    assert row is not None and row.status == SalesforceConnectionStatus.NEEDS_RECONNECT
    assert "SALESFORCE_JWT_ALLOWED" in (row.status_reason or "")


@pytest.mark.parametrize(
    ("value", "with_key"),
    [
        ("3:integration@acme.com", False),
        ("integration@acme.com", True),
        ("x:integration@acme.com", True),
        ("0:integration@acme.com", True),
        ("3:not-a-username", True),
        ("3:a b@acme.com", True),
    ],
)
def test_a_bad_jwt_allow_list_stops_start_up_naming_the_variable(
    value: str, with_key: bool, tmp_path: Path
) -> None:
    environment = {
        "SIGHTLINE_ENV": "development",
        "SIGHTLINE_VAR_DIR": str(tmp_path),
        "SECRET_KEY": "k" * 40,
        "SIGHTLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "SALESFORCE_JWT_ALLOWED": value,
    }
    if with_key:
        private_pem, _ = generate_rsa_keypair()
        environment["SALESFORCE_CLIENT_ID"] = "app"
        environment["SALESFORCE_JWT_PRIVATE_KEY"] = private_pem.decode()
    with pytest.raises(ConfigError, match=r"^SALESFORCE_JWT_ALLOWED: "):
        load_settings(environment)
