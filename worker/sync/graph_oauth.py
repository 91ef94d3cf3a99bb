"""Connecting a Microsoft 365 mailbox: MSAL's auth-code flow with PKCE, finished for tokens.

The scopes asked for are Mail.ReadWrite, Mail.Send and User.Read
(`graph_api.SCOPES`). The web app (`web.connect.oauth`) keeps MSAL's flow
(PKCE verifier, nonce, state) between `authorization_url` and the callback,
and binds it to the user who started it; the code comes back in a POST body
(form_post), never in a URL. `exchange_code` returns the address Graph says
was connected, read with the new token, never one the browser sent. This
module never stores anything: `worker.sync.connecting` does.
"""

from __future__ import annotations

from typing import Any

import msal
import requests

from worker.sync.base import ProviderError
from worker.sync.graph import GraphProvider
from worker.sync.graph_api import SCOPES, msal_app, token_error


def authorization_url(
    redirect_uri: str, state: str, login_hint: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Microsoft's consent URL, and MSAL's flow (PKCE verifier, nonce) to keep for the callback."""
    flow: dict[str, Any] = msal_app().initiate_auth_code_flow(
        list(SCOPES),
        redirect_uri=redirect_uri,
        state=state,
        login_hint=login_hint,
        response_mode="form_post",  # the code arrives in a POST body, never in a URL
    )
    if "auth_uri" not in flow:
        raise ProviderError(
            f"Microsoft sign-in could not start: {flow.get('error')}", permanent=True
        )
    return str(flow["auth_uri"]), flow


def exchange_code(
    flow: dict[str, Any], auth_response: dict[str, str]
) -> tuple[str, dict[str, Any]]:
    """Finish the flow with the callback's query. Returns the mailbox address and credentials."""
    cache = msal.SerializableTokenCache()
    app = msal_app(cache)
    try:
        result = app.acquire_token_by_auth_code_flow(flow, auth_response, scopes=list(SCOPES))
    except ValueError as exc:  # state mismatch: not the flow we started
        raise ProviderError(
            f"Microsoft sign-in answer did not match: {exc}", permanent=True
        ) from exc
    except requests.RequestException as exc:
        raise ProviderError(f"Microsoft sign-in is unreachable: {exc}") from exc
    if "access_token" not in result:
        error = token_error(result)
        raise ProviderError(str(error), permanent=True)
    accounts = app.get_accounts()
    if not accounts:
        raise ProviderError("Microsoft returned no account for this sign-in", permanent=True)
    account = accounts[0]
    credentials = {
        "token_cache": cache.serialize(),
        "home_account_id": account["home_account_id"],
        "username": account.get("username"),
    }
    token = str(result["access_token"])
    provider = GraphProvider("", credentials, get_token=lambda: token)
    try:
        me = provider.request(
            "GET", "/me?$select=mail,userPrincipalName", "reading the profile"
        ).json()
    finally:
        provider.close()
    address = str(me.get("mail") or me.get("userPrincipalName") or "").lower()
    if not address:
        raise ProviderError("Microsoft did not say which mailbox was connected", permanent=True)
    return address, credentials
