"""Who is calling the Gmail add-on: Google, for which Gmail user, checked.

Google calls every endpoint with `Authorization: Bearer <ID token>` signed with
one of Google's keys for the deployment's service account
(`GMAIL_ADDON_SERVICE_ACCOUNT`), audience the URL it called. The body carries
the Gmail user's own ID token (`authorizationEventObject.userIdToken`, audience
the add-on's OAuth client `GMAIL_ADDON_OAUTH_CLIENT_ID`), present once the user
granted the `userinfo.email` scope.

    Authorization header ──▶ signature (Google's certs, kid) · exp · aud = this URL
                              · iss Google · email = our service account, verified
        any failure ──▶ CallRefusedError (401), the body not even parsed
    userIdToken ──▶ signature · exp · aud = our OAuth client · iss Google
        missing ──▶ GmailCaller(email=None): a card asks for the scope
        bad ──▶ CallRefusedError (401)
        email_verified false ──▶ GmailCaller(email=None)

Google's certificates are cached per process with their max-age
(`worker.sync.gmail_push.google_certs`: the same cache as Gmail push tokens);
a token naming a key id Google does not publish costs at most one fetch a
minute. Verification is google-auth's (`google.auth.jwt.decode`, as
`google.oauth2.id_token.verify_token` does it, but with the cached keys).

Must never: read the event before the caller is proven, or log a token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import google.auth.exceptions
import google.auth.jwt
import requests

from config import get_settings
from worker.sync.gmail_push import google_certs

log = logging.getLogger(__name__)

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CLOCK_SKEW_SECONDS = 10
MAX_TOKEN_LENGTH = 8192
_JWT: Any = google.auth.jwt  # untyped functions


class CallRefusedError(Exception):
    """The call is not Google's for this deployment (answered 401); the message says why."""


@dataclass(frozen=True)
class GmailCaller:
    """The Gmail user Google vouches for; `email` is None without a verified address."""

    email: str | None


def _why(exc: Exception) -> str:
    """google-auth's reason in a few words: its messages may quote the token itself."""
    text = str(exc).lower()
    for words, reason in (
        ("expired", "expired"),
        ("too early", "not valid yet"),
        ("audience", "another audience"),
        ("signature", "bad signature"),
        ("certificate for key id", "unknown key id"),
    ):
        if words in text:
            return reason
    return f"malformed ({type(exc).__name__})"


def verify_id_token(token: str, audience: str | Sequence[str]) -> dict[str, Any]:
    """Google's claims of `token` for `audience`: signature, expiry, audience, issuer checked.

    Raises:
        CallRefusedError: any of those is wrong, or Google's certificates are unreachable.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise CallRefusedError("no ID token")
    certs_url = get_settings().gmail_addon.certs_url
    try:
        header = _JWT.decode_header(token)
        kid = header.get("kid") if isinstance(header, dict) else None
        if not isinstance(kid, str) or not kid:
            raise CallRefusedError("the ID token names no key id")
        certs = google_certs(certs_url, kid)
        if kid not in certs:
            raise CallRefusedError("the ID token names a key Google does not publish")
        claims: dict[str, Any] = _JWT.decode(
            token,
            certs=certs,
            audience=list(audience) if not isinstance(audience, str) else audience,
            clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
        )
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        raise CallRefusedError(f"ID token rejected: {_why(exc)}") from exc
    except requests.RequestException as exc:
        unreachable = f"Google's certificates are unreachable: {type(exc).__name__}"
        raise CallRefusedError(unreachable) from exc
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise CallRefusedError(f"ID token issuer {claims.get('iss')!r} is not Google")
    return claims


def bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise CallRefusedError("no bearer token")
    return token.strip()


def verify_google(authorization: str | None, audiences: Sequence[str]) -> None:
    """Prove the call is Google's for our deployment; nothing of the body is read.

    `audiences` are the URLs this request may have been addressed to.

    Raises:
        CallRefusedError: not configured, no system token or a bad one.
    """
    addon = get_settings().gmail_addon
    if not addon.configured:
        raise CallRefusedError(
            "the Gmail add-on is not configured: set GMAIL_ADDON_SERVICE_ACCOUNT and "
            "GMAIL_ADDON_OAUTH_CLIENT_ID"
        )
    system = verify_id_token(bearer(authorization), audiences)
    if system.get("email") != addon.service_account or system.get("email_verified") is not True:
        raise CallRefusedError(f"the call is signed for {system.get('email')!r}, not our add-on")


def gmail_user(event: dict[str, Any]) -> GmailCaller:
    """The Gmail user of a proven call (`verify_google`), by their own ID token in the body.

    Raises:
        CallRefusedError: the user's token is there but not Google's for our OAuth client.
    """
    authorization_event = event.get("authorizationEventObject")
    user_token = (
        authorization_event.get("userIdToken") if isinstance(authorization_event, dict) else None
    )
    if not isinstance(user_token, str) or not user_token:
        return GmailCaller(email=None)
    client_id = get_settings().gmail_addon.oauth_client_id
    if client_id is None:
        raise CallRefusedError("GMAIL_ADDON_OAUTH_CLIENT_ID is not set")
    user = verify_id_token(user_token, client_id)
    email = user.get("email")
    if not isinstance(email, str) or user.get("email_verified") is not True:
        return GmailCaller(email=None)
    return GmailCaller(email=email.strip().lower())


def verify_call(
    authorization: str | None, event: dict[str, Any], audiences: Sequence[str]
) -> GmailCaller:
    """Both checks at once (`verify_google`, then `gmail_user`), for callers holding the body."""
    verify_google(authorization, audiences)
    return gmail_user(event)
