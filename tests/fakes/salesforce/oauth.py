"""Salesforce's OAuth 2.0 token endpoint, and the access tokens the API accepts.

Grants at ``/services/oauth2/token`` (form POST):

- ``authorization_code`` (after ``/services/oauth2/authorize`` redirected back
  with ``code``; codes are single-use and live 15 minutes),
- ``refresh_token``, with optional refresh-token *rotation*: each refresh then
  answers a new refresh_token and the one presented stops working,
- ``password`` (password + security token appended, as Salesforce expects),
- ``urn:ietf:params:oauth:grant-type:jwt-bearer``: an RS256 JWT whose
  signature is checked with the connected app's registered public key
  (``cryptography``), ``iss`` = consumer key, ``sub`` = username, ``aud`` =
  https://login.salesforce.com, https://test.salesforce.com or the fake's own
  URL, ``exp`` not past (3 minutes of clock skew allowed),
- ``client_credentials`` (Basic auth header), for completeness.

Answers are shaped like Salesforce's: ``access_token, signature, scope,
instance_url, id, token_type, issued_at`` (+ ``refresh_token`` from the code
flow, and from a refresh when rotation is on); ``signature`` is base64
HMAC-SHA256 of ``id + issued_at`` keyed with the consumer secret. Errors are
HTTP 400 ``{"error", "error_description"}``: ``invalid_grant`` / "expired
access/refresh token", "authentication failure", "expired authorization code",
"invalid assertion", "audience is invalid", "user hasn't approved this
consumer"; ``invalid_client_id`` / "client identifier invalid"; ``invalid_client``
/ "invalid client credentials"; ``unsupported_grant_type`` / "grant type not
supported"; ``redirect_uri_mismatch``. Sources: Salesforce Help "OAuth 2.0
Refresh Token Flow" (rotation), "OAuth 2.0 JWT Bearer Flow" (claims, 3-minute
skew), and the error strings as real orgs return them.

The identity URL an answer's ``id`` names (``/id/<org id>/<user id>``) answers
its own user's ``username``, ``user_id``, ``organization_id``, ``display_name``
and ``email`` for a live Bearer token of that user; a dead token is 403
``Bad_OAuth_Token``, another user's URL 403 ``Bad_Id`` (Salesforce Help
"Identity URLs").

Not modelled: scopes beyond echoing ``api refresh_token``, PKCE, the user-agent
and device flows, the identity URL's other fields, token introspection, IP
restrictions, refresh-token idle expiry policies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_CLOCK_SKEW = 180.0
AUTH_CODE_TTL = 15 * 60.0
DEFAULT_CLIENT_ID = "sightline-test-consumer-key"
DEFAULT_CLIENT_SECRET = "sightline-test-consumer-secret"
DEFAULT_PASSWORD = "correct-horse"
DEFAULT_SECURITY_TOKEN = "SECTOKEN"


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass
class ConnectedApp:
    client_id: str
    client_secret: str
    jwt_public_key_pem: bytes | None = None
    redirect_uris: tuple[str, ...] = ()  # empty: any redirect_uri is accepted


@dataclass
class OrgUser:
    username: str
    user_id: str
    password: str = DEFAULT_PASSWORD
    security_token: str = DEFAULT_SECURITY_TOKEN


@dataclass
class AccessToken:
    token: str
    username: str
    issued_at: float
    expires_at: float | None
    expired: bool = False


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    username: str
    expires_at: float


@dataclass
class TokenService:
    """Connected apps, users, and every token the fake has issued. Thread-safe."""

    org_id: str
    instance_url: str = ""
    rotate_refresh_tokens: bool = False
    session_ttl: float | None = None
    apps: dict[str, ConnectedApp] = field(default_factory=dict)
    users: dict[str, OrgUser] = field(default_factory=dict)
    _access: dict[str, AccessToken] = field(default_factory=dict)
    _refresh: dict[str, tuple[str, str]] = field(default_factory=dict)  # token -> (client, user)
    _codes: dict[str, _Code] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # -- set-up ------------------------------------------------------------------------

    def add_app(
        self,
        client_id: str,
        client_secret: str,
        *,
        jwt_public_key_pem: bytes | None = None,
        redirect_uris: tuple[str, ...] = (),
    ) -> ConnectedApp:
        with self._lock:
            app = ConnectedApp(client_id, client_secret, jwt_public_key_pem, redirect_uris)
            self.apps[client_id] = app
            return app

    def add_user(
        self,
        username: str,
        user_id: str,
        *,
        password: str = DEFAULT_PASSWORD,
        security_token: str = DEFAULT_SECURITY_TOKEN,
    ) -> OrgUser:
        with self._lock:
            user = OrgUser(username, user_id, password, security_token)
            self.users[username.lower()] = user
            return user

    # -- access tokens -----------------------------------------------------------------

    def issue_access_token(self, username: str) -> str:
        with self._lock:
            token = f"{self.org_id[:15]}!AQ{secrets.token_urlsafe(48)}"
            now = time.time()
            expires = now + self.session_ttl if self.session_ttl is not None else None
            self._access[token] = AccessToken(token, username, now, expires)
            return token

    def is_valid(self, token: str) -> bool:
        with self._lock:
            record = self._access.get(token)
            if record is None or record.expired:
                return False
            return record.expires_at is None or record.expires_at > time.time()

    def expire(self, token: str | None = None) -> int:
        """Expire one access token (or all); returns how many were live."""
        with self._lock:
            targets = (
                [self._access[token]]
                if token in self._access
                else (list(self._access.values()) if token is None else [])
            )
            live = sum(1 for t in targets if not t.expired)
            for record in targets:
                record.expired = True
            return live

    def issue_refresh_token(self, client_id: str, username: str) -> str:
        with self._lock:
            token = f"5Aep861{secrets.token_urlsafe(60)}"
            self._refresh[token] = (client_id, username)
            return token

    def revoke(self, token: str) -> bool:
        with self._lock:
            found = self._refresh.pop(token, None) is not None
            if token in self._access:
                self._access[token].expired = True
                found = True
            return found

    def identity(self, token: str, *, org_id: str, user_id: str) -> dict[str, Any] | str:
        """The identity service's answer for `token`, or the 403 body when it refuses."""
        with self._lock:
            if not self.is_valid(token):
                return "Bad_OAuth_Token"
            user = self.users[self._access[token].username.lower()]
            if org_id != self.org_id or user_id != user.user_id:
                return "Bad_Id"
            local = user.username.split("@")[0]
            return {
                "id": f"{self.instance_url}/id/{self.org_id}/{user.user_id}",
                "asserted_user": True,
                "user_id": user.user_id,
                "organization_id": self.org_id,
                "username": user.username,
                "nick_name": local,
                "display_name": local.replace(".", " ").title(),
                "email": user.username,
                "active": True,
                "user_type": "STANDARD",
            }

    def refresh_tokens(self) -> list[str]:
        with self._lock:
            return list(self._refresh)

    def refresh_tokens_of(self, username: str) -> list[str]:
        """The live refresh tokens issued to `username`."""
        with self._lock:
            return [t for t, (_, user) in self._refresh.items() if user == username]

    # -- the authorize endpoint --------------------------------------------------------

    def authorize(self, client_id: str, redirect_uri: str, username: str | None) -> str:
        """Approve at once (no login page) and return the authorization code."""
        with self._lock:
            app = self._app(client_id)
            if app.redirect_uris and redirect_uri not in app.redirect_uris:
                raise OAuthError("redirect_uri_mismatch", "redirect_uri must match configuration")
            user = self._user(username) if username else next(iter(self.users.values()))
            code = f"aPrx{secrets.token_urlsafe(32)}"
            self._codes[code] = _Code(
                client_id, redirect_uri, user.username, time.time() + AUTH_CODE_TTL
            )
            return code

    # -- the token endpoint ------------------------------------------------------------

    def token_request(self, form: dict[str, str], authorization: str | None) -> dict[str, Any]:
        """Serve one ``/services/oauth2/token`` POST; raises OAuthError."""
        grant = form.get("grant_type", "")
        if not grant:
            raise OAuthError("invalid_request", "grant type is missing")
        handlers = {
            "authorization_code": self._grant_code,
            "refresh_token": self._grant_refresh,
            "password": self._grant_password,
            JWT_GRANT: self._grant_jwt,
            "client_credentials": self._grant_client_credentials,
        }
        handler = handlers.get(grant)
        if handler is None:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        with self._lock:
            return handler(form, authorization)

    def _grant_code(self, form: dict[str, str], _auth: str | None) -> dict[str, Any]:
        app = self._client(form, secret_required=True)
        code = self._codes.pop(form.get("code", ""), None)
        if code is None or code.client_id != app.client_id or code.expires_at < time.time():
            raise OAuthError("invalid_grant", "expired authorization code")
        if form.get("redirect_uri", "") != code.redirect_uri:
            raise OAuthError("redirect_uri_mismatch", "redirect_uri must match configuration")
        return self._answer(
            app, code.username, refresh_token=self.issue_refresh_token(app.client_id, code.username)
        )

    def _grant_refresh(self, form: dict[str, str], _auth: str | None) -> dict[str, Any]:
        app = self._client(form, secret_required=False)
        presented = form.get("refresh_token", "")
        owner = self._refresh.get(presented)
        if owner is None or owner[0] != app.client_id:
            raise OAuthError("invalid_grant", "expired access/refresh token")
        username = owner[1]
        new_refresh = None
        if self.rotate_refresh_tokens:
            del self._refresh[presented]
            new_refresh = self.issue_refresh_token(app.client_id, username)
        return self._answer(app, username, refresh_token=new_refresh)

    def _grant_password(self, form: dict[str, str], _auth: str | None) -> dict[str, Any]:
        app = self._client(form, secret_required=True)
        user = self.users.get(form.get("username", "").lower())
        if user is None or form.get("password") not in {
            user.password + user.security_token,
            user.password,
        }:
            raise OAuthError("invalid_grant", "authentication failure")
        return self._answer(app, user.username)

    def _grant_client_credentials(self, form: dict[str, str], auth: str | None) -> dict[str, Any]:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        if auth and auth.lower().startswith("basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, secret = decoded.partition(":")
        app = self._app(client_id)
        if not hmac.compare_digest(app.client_secret, secret):
            raise OAuthError("invalid_client", "invalid client credentials")
        return self._answer(app, next(iter(self.users.values())).username)

    def _grant_jwt(self, form: dict[str, str], _auth: str | None) -> dict[str, Any]:
        claims = self._verified_claims(form.get("assertion", ""))
        app = self.apps[claims["iss"]]
        user = self.users.get(str(claims.get("sub", "")).lower())
        if user is None:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        return self._answer(app, user.username)

    def _verified_claims(self, assertion: str) -> dict[str, Any]:
        try:
            header_b64, payload_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64url(header_b64))
            claims = json.loads(_b64url(payload_b64))
            signature = _b64url(signature_b64)
        except ValueError as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise OAuthError("invalid_grant", "invalid assertion")
        if header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "invalid assertion")
        app = self.apps.get(str(claims.get("iss", "")))
        if app is None:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if app.jwt_public_key_pem is None:
            raise OAuthError("invalid_grant", "invalid assertion")
        public_key = serialization.load_pem_public_key(app.jwt_public_key_pem)
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise OAuthError("invalid_grant", "invalid assertion")
        try:
            public_key.verify(
                signature,
                f"{header_b64}.{payload_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        audiences = {
            "https://login.salesforce.com",
            "https://test.salesforce.com",
            self.instance_url,
        }
        if str(claims.get("aud", "")).rstrip("/") not in audiences:
            raise OAuthError("invalid_grant", "audience is invalid")
        try:
            expires = float(claims["exp"])
        except (KeyError, TypeError, ValueError) as exc:
            raise OAuthError("invalid_grant", "invalid assertion") from exc
        if expires + JWT_CLOCK_SKEW < time.time():
            raise OAuthError("invalid_grant", "invalid assertion")
        return claims

    # -- helpers -----------------------------------------------------------------------

    def _app(self, client_id: str) -> ConnectedApp:
        app = self.apps.get(client_id)
        if app is None:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        return app

    def _user(self, username: str) -> OrgUser:
        user = self.users.get(username.lower())
        if user is None:
            raise OAuthError("invalid_grant", "authentication failure")
        return user

    def _client(self, form: dict[str, str], *, secret_required: bool) -> ConnectedApp:
        app = self._app(form.get("client_id", ""))
        secret = form.get("client_secret")
        if (secret_required or secret is not None) and not hmac.compare_digest(
            app.client_secret, secret or ""
        ):
            raise OAuthError("invalid_client", "invalid client credentials")
        return app

    def _answer(
        self, app: ConnectedApp, username: str, *, refresh_token: str | None = None
    ) -> dict[str, Any]:
        user = self.users[username.lower()]
        identity = f"{self.instance_url}/id/{self.org_id}/{user.user_id}"
        issued_at = str(int(time.time() * 1000))
        digest = hmac.new(
            app.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
        ).digest()
        answer: dict[str, Any] = {
            "access_token": self.issue_access_token(user.username),
            "signature": base64.b64encode(digest).decode(),
            "scope": "api refresh_token",
            "instance_url": self.instance_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
        if refresh_token is not None:
            answer["refresh_token"] = refresh_token
        return answer


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(private_key_pem: bytes, claims: dict[str, Any]) -> str:
    """Sign ``claims`` RS256 with ``private_key_pem`` (what a client would send)."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("an RSA private key is required")

    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = encode(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = encode(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{encode(signature)}"


def generate_rsa_keypair() -> tuple[bytes, bytes]:
    """A fresh (private PEM, public PEM) pair for a test's connected app."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem
