"""Which org a team writes to, how it connects, and the team's Salesforce settings.

A team without a `SalesforceConnection` row (or with one of kind `default`)
writes to the settings-level org (`SALESFORCE_*`): the simple install. A team
that connects its own org gets a row of kind `oauth` (web-server flow with a
refresh token), `jwt` (server-to-server, JWT bearer) or `password`
(development only). The row also carries the team's settings: the share of
the org's daily API allowance above which engagement updates wait
(`budget_share`, default 80 %), and whether unknown recipients become Leads
(`create_leads`, off by default).

OAuth web-server flow (the binding to the browser and person who started it,
and the confirm step, are web.oauth_flow's)::

    POST /api/v1/salesforce/connect {"kind": "oauth"}
        → `authorize_link(state, login_url)`: the authorize URL (the web keeps the flow)
    person approves in Salesforce → GET /api/v1/salesforce/oauth/callback?code&state
        → `exchange_code`: code → tokens at the login URL, signature checked, the
          identity read (who approved, which org): an `OrgGrant`, nothing saved
        → the person confirms: `save_grant` stores it encrypted; cancels: `revoke_grant`

`OrgProfile` (worker.salesforce.profiles) is what a flush reads once: where
the org is, its budget key (`org_key`: the org id when known, so teams sharing
an org share its allowance), and whether it can be written to now.
Disconnecting or a refused refresh holds the team's outbox rows; they are
written after a reconnect.

This module never logs a token, a password or a code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import select, update

from config import get_settings
from core.crypto import CredentialsError, decrypt_json, encrypt_json
from core.db import session_scope
from core.events import insert_ignore
from core.models import (
    OutboxStatus,
    SalesforceAuthKind,
    SalesforceConnection,
    SalesforceConnectionStatus,
    SalesforceOutbox,
    utcnow,
)
from core.outbound import OutboundError
from worker.salesforce import profiles
from worker.salesforce.auth import (
    ConnectionTokens,
    SettingsTokens,
    authorize_url,
    jwt_grant,
    org_id_from_identity,
    password_login,
    signature_ok,
    token_grant,
)
from worker.salesforce.budget import OrgBudget, parse_limit_info
from worker.salesforce.client import SalesforceApi, SalesforceError, TokenSource
from worker.salesforce.hosts import checked_url, salesforce_session
from worker.salesforce.profiles import OrgProfile

log = logging.getLogger(__name__)

# web.api.salesforce imports these from here, where they lived before profiles.py.
DEFAULT_BUDGET_SHARE = profiles.DEFAULT_BUDGET_SHARE
load_profile = profiles.load_profile

CALLBACK_PATH = "/api/v1/salesforce/oauth/callback"


class ConnectError(ValueError):
    """A connect request cannot be honoured. The message starts with the field's name."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message
        self.status = status  # 403: the operator does not allow it


def token_source(profile: OrgProfile) -> TokenSource:
    settings = get_settings().salesforce
    if profile.connection_id is None:
        return SettingsTokens(settings)
    return ConnectionTokens(profile.connection_id, settings)


def open_api(profile: OrgProfile, budget: OrgBudget | None = None) -> SalesforceApi:
    """A client for the team's org that feeds every response's usage to the org's budget."""
    settings = get_settings().salesforce
    budget = budget or OrgBudget(profile.org_key)

    def on_response(response: requests.Response) -> None:
        budget.count_call()
        usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            budget.record(*usage)

    return SalesforceApi(
        token_source(profile),
        api_version=settings.api_version,
        timeout=settings.timeout_seconds,
        on_response=on_response,
    )


# -- connecting -----------------------------------------------------------------------


def redirect_uri() -> str:
    return get_settings().public_base_url + CALLBACK_PATH


def _login_url(given: str | None) -> str:
    """The login URL to use: the operator's, or one a team gave if it is Salesforce's (hosts)."""
    settings = get_settings().salesforce
    if given is None:
        return settings.login_url
    try:
        return checked_url(given.strip(), "login_url")
    except OutboundError as exc:
        raise ConnectError("login_url", str(exc).removeprefix("login_url: ")) from None


@dataclass(frozen=True)
class OrgGrant:
    """What Salesforce granted for an approved connect, before anyone confirmed it.

    `credentials` holds the tokens: kept encrypted, never logged.
    """

    login_url: str
    instance_url: str
    org_id: str | None
    username: str
    credentials: dict[str, str]


def authorize_link(state: str, login_url: str | None) -> tuple[str, str]:
    """(Salesforce's authorize URL carrying `state`, the login URL it goes to).

    Raises:
        ConnectError: no Connected App is configured, or `login_url` is not acceptable.
    """
    settings = get_settings().salesforce
    if not (settings.client_id and settings.client_secret):
        raise ConnectError(
            "kind",
            "oauth needs SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET (a Connected App)",
        )
    url = _login_url(login_url)
    return authorize_url(url, settings.client_id, redirect_uri(), state), url


def exchange_code(code: str, login_url: str) -> OrgGrant:
    """Trade the authorization code for tokens and read who approved, in which org. Saves nothing.

    Raises:
        ConnectError: no code, or no refresh token granted.
        SalesforceError: Salesforce refused (kind auth) or is unreachable (kind transient).
    """
    settings = get_settings().salesforce
    if not code:
        raise ConnectError("code", "missing")
    if not (settings.client_id and settings.client_secret):
        raise ConnectError("kind", "the Connected App was removed from the settings meanwhile")
    answer = token_grant(
        login_url,
        {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "redirect_uri": redirect_uri(),
        },
    )
    if not signature_ok(answer, settings.client_secret):
        raise SalesforceError("Salesforce's token answer has a bad signature", kind="auth")
    credentials = {"access_token": str(answer["access_token"])}
    if answer.get("refresh_token"):
        credentials["refresh_token"] = str(answer["refresh_token"])
    grant = OrgGrant(
        login_url=login_url,
        instance_url=str(answer["instance_url"]),
        org_id=org_id_from_identity(answer.get("id")),
        username="",
        credentials=credentials,
    )
    if "refresh_token" not in credentials:
        revoke_grant(grant)
        raise ConnectError(
            "scope", "Salesforce issued no refresh token: allow the refresh_token scope"
        )
    identity = _identity(str(answer.get("id") or ""), credentials["access_token"])
    username = str(identity.get("username") or "")
    if not username:
        revoke_grant(grant)
        raise SalesforceError("Salesforce did not say who approved the connection", kind="auth")
    return OrgGrant(
        login_url=grant.login_url,
        instance_url=grant.instance_url,
        org_id=str(identity.get("organization_id") or "") or grant.org_id,
        username=username,
        credentials=credentials,
    )


def _identity(identity_url: str, access_token: str) -> dict[str, Any]:
    """Salesforce's identity service (the signed answer's `id`): username and org id."""
    if not identity_url.startswith("https://"):
        raise SalesforceError("Salesforce's token answer has no identity URL", kind="auth")
    try:
        response = salesforce_session().get(
            identity_url,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
            timeout=get_settings().salesforce.timeout_seconds,
        )
    except OutboundError as exc:  # token_grant checked it; DNS may have moved since
        raise SalesforceError(f"Salesforce's identity URL refused: {exc}", kind="auth") from None
    except requests.RequestException as exc:
        raise SalesforceError(
            f"Salesforce's identity service is unreachable: {type(exc).__name__}", kind="transient"
        ) from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        kind = "transient" if response.status_code >= 500 else "auth"
        raise SalesforceError(
            f"Salesforce's identity service answered {response.status_code}", kind=kind
        )
    return body


def save_grant(team_id: int, grant: OrgGrant) -> SalesforceConnection:
    """Connect the team to the org a person confirmed."""
    return _save_connection(
        team_id,
        kind=SalesforceAuthKind.OAUTH,
        login_url=grant.login_url,
        instance_url=grant.instance_url,
        org_id=grant.org_id,
        username=grant.username,
        credentials=dict(grant.credentials),
    )


def revoke_grant(grant: OrgGrant) -> None:
    """Give an unconfirmed grant back (Salesforce revokes per token: nothing else is touched)."""
    _revoke(
        grant.login_url,
        grant.credentials.get("refresh_token") or grant.credentials.get("access_token"),
    )


def connect_jwt(team_id: int, username: str, login_url: str | None) -> SalesforceConnection:
    settings = get_settings().salesforce
    if not (settings.client_id and settings.jwt_private_key):
        raise ConnectError(
            "kind",
            "jwt needs SALESFORCE_CLIENT_ID and SALESFORCE_JWT_PRIVATE_KEY (a Connected App)",
        )
    if not settings.jwt_allows(team_id, username):
        raise ConnectError(
            "username",
            f"this team may not connect {username} with the JWT flow: the operator's key "
            "signs only for the users the operator lists for a team (SALESFORCE_JWT_ALLOWED); "
            "connect with oauth instead",
            status=403,
        )
    url = _login_url(login_url)
    answer = jwt_grant(url, settings.client_id, settings.jwt_private_key, username)
    return _save_connection(
        team_id,
        kind=SalesforceAuthKind.JWT,
        login_url=url,
        instance_url=str(answer["instance_url"]),
        org_id=org_id_from_identity(answer.get("id")),
        username=username,
        credentials={"access_token": str(answer["access_token"])},
    )


def connect_password(
    team_id: int, username: str, password: str, security_token: str, login_url: str | None
) -> SalesforceConnection:
    """Development only: production installs connect with OAuth or JWT."""
    if get_settings().is_production:
        raise ConnectError("kind", "password login is for development; use oauth or jwt")
    url = _login_url(login_url)
    session = password_login(get_settings().salesforce, url, username, password, security_token)
    return _save_connection(
        team_id,
        kind=SalesforceAuthKind.PASSWORD,
        login_url=url,
        instance_url=session.instance_url,
        org_id=None,
        username=username,
        credentials={
            "access_token": session.access_token,
            "password": password,
            "security_token": security_token,
        },
    )


def _ensure_row(team_id: int) -> None:
    now = utcnow()
    with session_scope() as session:
        insert_ignore(
            session,
            SalesforceConnection.__table__,  # type: ignore[arg-type]
            {
                "team_id": team_id,
                "auth_kind": SalesforceAuthKind.DEFAULT,
                "token_version": 0,
                "status": SalesforceConnectionStatus.ACTIVE,
                "budget_share": DEFAULT_BUDGET_SHARE,
                "create_leads": False,
                "updated_at": now,
            },
            "team_id",
        )


def _save_connection(
    team_id: int,
    *,
    kind: str,
    login_url: str,
    instance_url: str,
    org_id: str | None,
    username: str | None,
    credentials: dict[str, Any],
) -> SalesforceConnection:
    _ensure_row(team_id)
    now = utcnow()
    with session_scope() as session:
        session.execute(
            update(SalesforceConnection)
            .where(SalesforceConnection.team_id == team_id)
            .values(
                auth_kind=kind,
                login_url=login_url,
                instance_url=instance_url,
                org_id=org_id,
                username=username,
                credentials_encrypted=encrypt_json(credentials),
                # A renewal in flight for the old credentials must not overwrite these.
                token_version=SalesforceConnection.token_version + 1,
                status=SalesforceConnectionStatus.ACTIVE,
                status_reason=None,
                connected_at=now,
                updated_at=now,
            )
        )
        row = session.scalars(
            select(SalesforceConnection).where(SalesforceConnection.team_id == team_id)
        ).one()
        session.expunge(row)
    for org_key in (f"org:{org_id}", f"conn:{row.id}"):
        OrgBudget(org_key).unpark()  # whatever held the old connection is gone
    with session_scope() as session:
        # Writes held while the team had no working org go now.
        session.execute(
            update(SalesforceOutbox)
            .where(
                SalesforceOutbox.team_id == team_id,
                SalesforceOutbox.status.in_([OutboxStatus.PENDING, OutboxStatus.WAITING_WHO]),
                SalesforceOutbox.next_attempt_at > now,
            )
            .values(next_attempt_at=now)
        )
    log.info(
        "salesforce_connected team_id=%s kind=%s org_id=%s instance_url=%s",
        team_id,
        kind,
        org_id,
        instance_url,
    )
    return row


def disconnect(team_id: int) -> bool:
    """Forget the team's own org (revoking its refresh token). Its rows are held, not lost."""
    with session_scope() as session:
        row = session.scalar(
            select(SalesforceConnection).where(SalesforceConnection.team_id == team_id)
        )
        if row is None or row.auth_kind == SalesforceAuthKind.DEFAULT:
            return False
        credentials: dict[str, Any] = {}
        if row.credentials_encrypted:
            try:
                credentials = decrypt_json(row.credentials_encrypted)
            except CredentialsError:
                credentials = {}
        login_url = row.login_url or get_settings().salesforce.login_url
        row.status = SalesforceConnectionStatus.DISCONNECTED
        row.status_reason = "disconnected by a person"
        row.credentials_encrypted = None
        row.token_version = row.token_version + 1
        row.updated_at = utcnow()
    _revoke(login_url, credentials.get("refresh_token") or credentials.get("access_token"))
    log.info("salesforce_disconnected team_id=%s", team_id)
    return True


def _revoke(login_url: str, token: str | None) -> None:
    """Best effort: a token Salesforce no longer knows is as good as revoked."""
    if not token:
        return
    try:
        salesforce_session().post(
            f"{login_url}/services/oauth2/revoke",
            data={"token": token},
            timeout=get_settings().salesforce.timeout_seconds,
        )
    except OutboundError as exc:  # a login URL stored before hosts were checked
        log.warning("salesforce_revoke_refused reason=%s", exc)
    except requests.RequestException as exc:
        log.warning("salesforce_revoke_failed error=%s", type(exc).__name__)


def update_settings(
    team_id: int, *, budget_share: int | None = None, create_leads: bool | None = None
) -> SalesforceConnection:
    if budget_share is not None and not 1 <= budget_share <= 100:
        raise ConnectError("budget_share", "must be between 1 and 100 (percent)")
    _ensure_row(team_id)
    values: dict[str, Any] = {"updated_at": utcnow()}
    if budget_share is not None:
        values["budget_share"] = budget_share
    if create_leads is not None:
        values["create_leads"] = create_leads
    with session_scope() as session:
        session.execute(
            update(SalesforceConnection)
            .where(SalesforceConnection.team_id == team_id)
            .values(**values)
        )
        row = session.scalars(
            select(SalesforceConnection).where(SalesforceConnection.team_id == team_id)
        ).one()
        session.expunge(row)
    return row
