"""Connecting a Gmail mailbox: Google's OAuth consent, with PKCE, and the code traded for tokens.

The scopes asked for are `gmail.readonly` + `gmail.send` and nothing more
(`gmail_api.SCOPES`); a grant without both is refused. The web app
(`web.connect.oauth`) keeps the PKCE verifier between `authorization_url`
and the callback, and binds the flow to the user who started it; this module
only talks to Google. `exchange_code` returns the address Google says was
connected, read from the profile with the new token, never one the browser
sent. It never stores anything: `worker.sync.connecting` does.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from google_auth_oauthlib.flow import Flow

from config import get_settings
from worker.sync.base import ProviderError
from worker.sync.gmail import GmailProvider
from worker.sync.gmail_api import SCOPES, oauth_client


def _flow(redirect_uri: str, code_verifier: str | None = None) -> Flow:
    client_id, client_secret = oauth_client()
    settings = get_settings().providers
    config = {
        "web": {
            "client_id": client_id,
            "client_secret": client_secret,
            "auth_uri": settings.google_auth_uri,
            "token_uri": settings.google_token_uri,
            "redirect_uris": [redirect_uri],
        }
    }
    return Flow.from_client_config(
        config,
        scopes=list(SCOPES),
        redirect_uri=redirect_uri,
        code_verifier=code_verifier,
        autogenerate_code_verifier=code_verifier is None,
    )


def authorization_url(
    redirect_uri: str, state: str, login_hint: str | None = None
) -> tuple[str, str]:
    """Google's consent URL for `state`, and the PKCE verifier to keep until the callback."""
    flow = _flow(redirect_uri)
    extra = {"login_hint": login_hint} if login_hint else {}
    url, _ = flow.authorization_url(
        access_type="offline",
        prompt="consent",
        include_granted_scopes="false",
        state=state,
        **extra,
    )
    verifier = flow.code_verifier
    if not verifier:  # pragma: no cover - autogenerate_code_verifier=True sets it
        raise ProviderError("Google OAuth flow made no PKCE verifier", permanent=True)
    return str(url), str(verifier)


def exchange_code(code: str, redirect_uri: str, code_verifier: str) -> tuple[str, dict[str, Any]]:
    """Trade the callback's code for tokens. Returns the Gmail address and credentials JSON."""
    flow = _flow(redirect_uri, code_verifier=code_verifier)
    try:
        flow.fetch_token(code=code)
    except Exception as exc:  # oauthlib raises many types; all mean "not connected"
        raise ProviderError(
            f"Google refused the authorization code: {exc}", permanent=True
        ) from exc
    creds = flow.credentials
    if not creds.refresh_token:
        raise ProviderError(
            "Google sent no refresh token: remove Sightline from your Google account's "
            "third-party access and connect again",
            permanent=True,
        )
    expiry = creds.expiry
    credentials: dict[str, Any] = {
        "refresh_token": creds.refresh_token,
        "access_token": creds.token,
        "expires_at": expiry.replace(tzinfo=UTC).timestamp() if expiry else None,
        "scopes": sorted(set(creds.granted_scopes or creds.scopes or SCOPES)),
    }
    provider = GmailProvider("", credentials)
    address = str(provider.profile().get("emailAddress", "")).lower()
    if not address:
        raise ProviderError("Google did not say which mailbox was connected", permanent=True)
    missing = [s for s in SCOPES if s not in credentials["scopes"]]
    if missing:
        raise ProviderError(
            f"Google access lacks {', '.join(missing)}: connect again and allow it", permanent=True
        )
    return address, credentials
