"""Access tokens for an org: getting them, renewing them, one renewal at a time.

Every flow talks to the org's *login URL*: https://login.salesforce.com,
https://test.salesforce.com (sandboxes) or the org's My Domain. It is a
setting (`SALESFORCE_LOGIN_URL`) or stored with a team's connection, never
hard-coded, so the same code reaches a local fake in tests.

    flow                       how                                            renew on 401
    access token (settings)    SALESFORCE_ACCESS_TOKEN as given               impossible: auth error
    username + password        SOAP login() through simple-salesforce, or     log in again
                               the OAuth password grant with a Connected App
    JWT bearer                 RS256 assertion (iss = client id, sub = user,  new assertion
                               aud = login/test.salesforce.com, exp = +3 min)
    web-server (refresh token) grant_type=refresh_token; with rotation the    refresh (the
                               answer carries a new refresh token             rotated token saved)

Renewals are serialised per org by a Redis lock. Whoever takes the lock first
re-reads the stored session: if it no longer holds the token that failed,
another process has already renewed and that session is used without asking
Salesforce again. A refresh that rotates the refresh token saves the new
access and refresh tokens in one compare-and-set UPDATE of the connection
(`token_version`), so a newer token is never overwritten by an older one.

Sessions are stored encrypted: a connection's in its row, the settings org's
in Redis. A refusal (invalid_grant, bad password, revoked app) is
`SalesforceError(kind="auth")` and marks the connection `needs_reconnect`.
This module never logs a token or a password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
import requests
from redis.exceptions import LockError
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.login import SalesforceLogin
from sqlalchemy import update

from config import get_settings
from config.settings import SalesforceSettings
from core.crypto import CredentialsError, decrypt_json, encrypt_json
from core.db import session_scope
from core.models import (
    SalesforceAuthKind,
    SalesforceConnection,
    SalesforceConnectionStatus,
    utcnow,
)
from core.outbound import OutboundError, split_url
from core.redis import get_redis
from worker.salesforce.client import OrgSession, SalesforceError
from worker.salesforce.hosts import checked_url, salesforce_session
from worker.salesforce.hosts import refusal as host_refusal

log = logging.getLogger(__name__)

LOCK_SECONDS = 60
LOCK_WAIT_SECONDS = 30
SETTINGS_SESSION_SECONDS = 3600  # a cached settings-org session is dropped after this
JWT_LIFETIME_SECONDS = 180


def token_endpoint(login_url: str) -> str:
    return f"{login_url.rstrip('/')}/services/oauth2/token"


def jwt_audience(login_url: str) -> str:
    """login.salesforce.com for production orgs, test.salesforce.com for sandboxes.

    A My Domain login URL still takes one of those two as audience; any other
    host (a community, a test double) is its own audience.
    """
    host = urlsplit(login_url).hostname or ""
    if host == "test.salesforce.com" or ".sandbox.my.salesforce.com" in host:
        return "https://test.salesforce.com"
    if host.endswith(".salesforce.com"):
        return "https://login.salesforce.com"
    return login_url.rstrip("/")


def org_id_from_identity(identity_url: str | None) -> str | None:
    """The org id in an identity URL (…/id/<org id>/<user id>)."""
    parts = (identity_url or "").rstrip("/").split("/")
    return parts[-2] if len(parts) >= 3 and parts[-3] == "id" else None


def signature_ok(answer: dict[str, Any], client_secret: str) -> bool:
    """Salesforce signs id + issued_at with the consumer secret (HMAC-SHA256, base64)."""
    given = str(answer.get("signature") or "")
    message = f"{answer.get('id', '')}{answer.get('issued_at', '')}".encode()
    expected = base64.b64encode(hmac.new(client_secret.encode(), message, hashlib.sha256).digest())
    return hmac.compare_digest(given.encode(), expected)


def authorize_url(login_url: str, client_id: str, redirect_uri: str, state: str) -> str:
    """Where to send a person to connect their org (OAuth web-server flow)."""
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": "api refresh_token",
            "state": state,
            "prompt": "login consent",
        }
    )
    return f"{login_url.rstrip('/')}/services/oauth2/authorize?{query}"


def token_grant(login_url: str, form: dict[str, str]) -> dict[str, Any]:
    """POST the token endpoint; the answer, or SalesforceError (auth when refused).

    The request goes only to a Salesforce host or the operator's own (`hosts`),
    and the answer's `instance_url` and identity `id` are held to the same rule
    before anyone uses them: a forged answer cannot send a bearer token elsewhere.
    """
    grant = form.get("grant_type", "?")
    try:
        response = salesforce_session().post(
            token_endpoint(login_url), data=form, timeout=get_settings().salesforce.timeout_seconds
        )
    except OutboundError as exc:
        raise SalesforceError(f"Salesforce login URL refused: {exc}", kind="auth") from None
    except requests.RequestException as exc:
        raise SalesforceError(
            f"Salesforce token endpoint unreachable: {type(exc).__name__}", kind="transient"
        ) from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200 and isinstance(body, dict) and body.get("access_token"):
        return _checked_answer(body)
    error = str(body.get("error") or response.status_code) if isinstance(body, dict) else "?"
    detail = str(body.get("error_description") or "") if isinstance(body, dict) else ""
    kind = "transient" if response.status_code >= 500 else "auth"
    raise SalesforceError(
        f"Salesforce refused the {grant} grant: {error} {detail}".strip(), kind=kind, codes=[error]
    )


def _checked_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """The token answer with its `instance_url` checked and normalised (and `id`'s host)."""
    try:
        answer["instance_url"] = checked_url(str(answer.get("instance_url") or ""), "instance_url")
        identity = answer.get("id")
        if identity is not None:
            scheme, host, port = split_url(str(identity), schemes=("https", "http"))
            why = host_refusal(scheme, host, port)
            if why is not None:
                raise OutboundError(f"id: {why}")
    except OutboundError as exc:
        log.warning("salesforce_token_answer_refused reason=%s", exc)
        raise SalesforceError(
            f"Salesforce's token answer names a place we will not send a token to: {exc}",
            kind="auth",
        ) from None
    return answer


def jwt_grant(login_url: str, client_id: str, private_key: str, username: str) -> dict[str, Any]:
    assertion = jwt.encode(
        {
            "iss": client_id,
            "sub": username,
            "aud": jwt_audience(login_url),
            "exp": int(time.time()) + JWT_LIFETIME_SECONDS,
        },
        private_key,
        algorithm="RS256",
    )
    return token_grant(
        login_url,
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )


def password_login(
    settings: SalesforceSettings,
    login_url: str,
    username: str,
    password: str,
    security_token: str,
) -> OrgSession:
    """Username + password (+ security token): the OAuth password grant when a Connected
    App is configured, else SOAP login() through simple-salesforce."""
    if settings.client_id and settings.client_secret:
        answer = token_grant(
            login_url,
            {
                "grant_type": "password",
                "client_id": settings.client_id,
                "client_secret": settings.client_secret,
                "username": username,
                "password": password + security_token,
            },
        )
        return OrgSession(str(answer["instance_url"]), str(answer["access_token"]))
    try:
        session_id, instance = SalesforceLogin(
            username=username,
            password=password,
            security_token=security_token,
            sf_version=settings.api_version,
            scratch_url=login_url.rstrip("/"),  # SOAP login() at our login URL, not a guess
            session=salesforce_session(),
        )
        instance_url = checked_url(f"https://{instance}", "instance_url")
    except OutboundError as exc:
        raise SalesforceError(f"Salesforce login refused: {exc}", kind="auth") from None
    except SalesforceAuthenticationFailed as exc:
        raise SalesforceError(f"Salesforce login failed: {exc.code}", kind="auth") from exc
    except requests.RequestException as exc:
        raise SalesforceError(
            f"Salesforce login unreachable: {type(exc).__name__}", kind="transient"
        ) from exc
    return OrgSession(instance_url, session_id)


class _Lock:
    """The per-org renewal lock; SalesforceError(transient) if it cannot be had in time."""

    def __init__(self, name: str) -> None:
        self.lock = get_redis().lock(
            f"sightline:sf:auth:{name}", timeout=LOCK_SECONDS, blocking_timeout=LOCK_WAIT_SECONDS
        )

    def __enter__(self) -> None:
        if not self.lock.acquire():
            raise SalesforceError(
                "another process is renewing this org's session", kind="transient"
            )

    def __exit__(self, *exc: object) -> None:
        try:
            self.lock.release()
        except LockError:  # the lock expired under a slow grant: another may hold it now
            log.warning("salesforce_auth_lock_lost lock=%s", self.lock.name)


class SettingsTokens:
    """The settings-level org (SALESFORCE_*), shared by every team without its own."""

    def __init__(self, settings: SalesforceSettings, org_key: str = "default") -> None:
        self.settings = settings
        self.org_key = org_key
        self.redis = get_redis()
        self._cache = f"sightline:sf:session:{org_key}"

    def _stored(self) -> OrgSession | None:
        s = self.settings
        if s.instance_url and s.access_token and not (s.username or s.jwt_username):
            return OrgSession(s.instance_url, s.access_token)
        raw = self.redis.get(self._cache)
        if raw is None:
            return None
        try:
            data = decrypt_json(raw.decode() if isinstance(raw, bytes) else raw)
        except CredentialsError:
            return None
        return OrgSession(str(data["instance_url"]), str(data["access_token"]))

    def current(self) -> OrgSession:
        return self._stored() or self.renew(None)

    def renew(self, stale_token: str | None) -> OrgSession:
        s = self.settings
        if not (s.username or s.jwt_username):
            raise SalesforceError(
                "Salesforce refused SALESFORCE_ACCESS_TOKEN and it cannot be renewed: set a new "
                "one, or configure username/password or the JWT flow",
                kind="auth",
            )
        with _Lock(self.org_key):
            stored = self._stored()
            if stored is not None and stored.access_token != stale_token:
                return stored  # another process renewed it while we waited
            fresh = self._login()
            self.redis.set(
                self._cache,
                encrypt_json(
                    {"instance_url": fresh.instance_url, "access_token": fresh.access_token}
                ),
                ex=SETTINGS_SESSION_SECONDS,
            )
            log.info("salesforce_session_renewed org=%s", self.org_key)
            return fresh

    def _login(self) -> OrgSession:
        s = self.settings
        if s.jwt_username and s.client_id and s.jwt_private_key:
            answer = jwt_grant(s.login_url, s.client_id, s.jwt_private_key, s.jwt_username)
            return OrgSession(str(answer["instance_url"]), str(answer["access_token"]))
        assert s.username and s.password
        return password_login(s, s.login_url, s.username, s.password, s.security_token or "")


class ConnectionTokens:
    """A team's own org, through the credentials stored with its connection."""

    def __init__(self, connection_id: int, settings: SalesforceSettings) -> None:
        self.connection_id = connection_id
        self.settings = settings

    def _read(self) -> tuple[SalesforceConnection, dict[str, Any]]:
        with session_scope() as session:
            row = session.get(SalesforceConnection, self.connection_id)
            if row is None or row.status != SalesforceConnectionStatus.ACTIVE:
                raise SalesforceError("the team's Salesforce connection is not active", kind="auth")
            session.expunge(row)
        try:
            credentials = (
                decrypt_json(row.credentials_encrypted or "") if row.credentials_encrypted else {}
            )
        except CredentialsError as exc:
            raise SalesforceError(str(exc), kind="auth") from exc
        return row, credentials

    def current(self) -> OrgSession:
        row, credentials = self._read()
        if row.instance_url and credentials.get("access_token"):
            return self._stored_session(row, str(credentials["access_token"]))
        return self.renew(None)

    def _stored_session(self, row: SalesforceConnection, token: str) -> OrgSession:
        """The stored org, if its instance URL is still one we send a token to (`hosts`).

        Checked at every use: a row saved before hosts were checked, or an operator
        setting that changed, must not carry the bearer token elsewhere.
        """
        try:
            instance_url = checked_url(str(row.instance_url or ""), "instance_url")
        except OutboundError as exc:
            reason = f"the stored Salesforce {exc}"
            mark_needs_reconnect(self.connection_id, row.token_version, reason)
            raise SalesforceError(reason, kind="auth") from None
        return OrgSession(instance_url, token)

    def renew(self, stale_token: str | None) -> OrgSession:
        with _Lock(f"conn:{self.connection_id}"):
            row, credentials = self._read()
            stored = credentials.get("access_token")
            if row.instance_url and stored and stored != stale_token:
                return self._stored_session(row, str(stored))  # renewed while we waited
            try:
                instance_url, changes = self._grant(row, credentials)
            except SalesforceError as exc:
                if exc.kind == "auth":
                    mark_needs_reconnect(self.connection_id, row.token_version, str(exc))
                raise
            credentials.update(changes)
            saved = save_credentials(
                self.connection_id, row.token_version, credentials, instance_url
            )
            if not saved:
                # Someone reconnected the org meanwhile: theirs is newer than ours.
                row, credentials = self._read()
                if not (row.instance_url and credentials.get("access_token")):
                    raise SalesforceError(
                        "the Salesforce connection changed meanwhile", kind="transient"
                    )
                return self._stored_session(row, str(credentials["access_token"]))
            log.info(
                "salesforce_session_renewed connection_id=%s kind=%s rotated=%s",
                self.connection_id,
                row.auth_kind,
                "refresh_token" in changes,
            )
            return OrgSession(instance_url, str(credentials["access_token"]))

    def _grant(
        self, row: SalesforceConnection, credentials: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        s = self.settings
        login_url = row.login_url or s.login_url
        if row.auth_kind == SalesforceAuthKind.OAUTH:
            if not (s.client_id and s.client_secret):
                raise SalesforceError(
                    "SALESFORCE_CLIENT_ID/SECRET are not set: cannot refresh", kind="auth"
                )
            answer = token_grant(
                login_url,
                {
                    "grant_type": "refresh_token",
                    "refresh_token": str(credentials.get("refresh_token") or ""),
                    "client_id": s.client_id,
                    "client_secret": s.client_secret,
                },
            )
            changes = {"access_token": str(answer["access_token"])}
            if answer.get("refresh_token"):
                changes["refresh_token"] = str(answer["refresh_token"])  # rotation
            return str(answer["instance_url"]), changes
        if row.auth_kind == SalesforceAuthKind.JWT:
            if not (s.client_id and s.jwt_private_key and row.username):
                raise SalesforceError(
                    "SALESFORCE_CLIENT_ID/JWT_PRIVATE_KEY are not set: cannot sign", kind="auth"
                )
            if not s.jwt_allows(row.team_id, row.username):
                # The allow-list is read at every renewal: an operator can take it back.
                raise SalesforceError(
                    f"the operator does not allow this team the JWT flow for {row.username} "
                    "(SALESFORCE_JWT_ALLOWED)",
                    kind="auth",
                )
            answer = jwt_grant(login_url, s.client_id, s.jwt_private_key, row.username)
            return str(answer["instance_url"]), {"access_token": str(answer["access_token"])}
        if row.auth_kind == SalesforceAuthKind.PASSWORD and row.username:
            fresh = password_login(
                s,
                login_url,
                row.username,
                str(credentials.get("password") or ""),
                str(credentials.get("security_token") or ""),
            )
            return fresh.instance_url, {"access_token": fresh.access_token}
        raise SalesforceError(f"cannot renew a {row.auth_kind} connection", kind="auth")


def save_credentials(
    connection_id: int,
    expected_version: int,
    credentials: dict[str, Any],
    instance_url: str | None,
) -> bool:
    """Compare-and-set the connection's credentials; False if another write came first."""
    values: dict[str, Any] = {
        "credentials_encrypted": encrypt_json(credentials),
        "token_version": expected_version + 1,
        "updated_at": utcnow(),
    }
    if instance_url:
        values["instance_url"] = instance_url
    with session_scope() as session:
        result = session.execute(
            update(SalesforceConnection)
            .where(
                SalesforceConnection.id == connection_id,
                SalesforceConnection.token_version == expected_version,
            )
            .values(**values)
        )
        return int(result.rowcount) == 1  # type: ignore[attr-defined]


def mark_needs_reconnect(connection_id: int, expected_version: int, reason: str) -> None:
    with session_scope() as session:
        session.execute(
            update(SalesforceConnection)
            .where(
                SalesforceConnection.id == connection_id,
                SalesforceConnection.token_version == expected_version,
            )
            .values(
                status=SalesforceConnectionStatus.NEEDS_RECONNECT,
                status_reason=reason[:1000],
                updated_at=utcnow(),
            )
        )
    log.warning("salesforce_needs_reconnect connection_id=%s reason=%s", connection_id, reason)
