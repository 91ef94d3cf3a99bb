"""Microsoft Graph's plumbing: MSAL tokens saved the moment they change, errors in our words.

Microsoft rotates refresh tokens, so a mailbox's MSAL token cache is saved
back through `save_credentials` whenever MSAL changes it (`MsalToken`), before
the job that refreshed it can die. Every Graph answer that is not what was
asked for becomes one `ProviderError` (`translate`): throttled with
Retry-After, reconnect (401/403), broken item (permanent), or try again.

Built once per process or thread, not per job: MSAL's tenant discovery cache
(`msal_app`) and this thread's connection pool (`shared_session`). This module
holds no mailbox state and never touches the database; the provider
(`worker.sync.graph`) and the connect flow (`worker.sync.graph_oauth`) use it.
"""

from __future__ import annotations

import email.utils
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import msal
import requests

from config import get_settings
from worker.sync.base import ProviderError
from worker.sync.quota import QuotaError

SCOPES = (
    "https://graph.microsoft.com/Mail.ReadWrite",
    "https://graph.microsoft.com/Mail.Send",
    "https://graph.microsoft.com/User.Read",
)
TIMEOUT_SECONDS = 60
# MSAL caches tenant discovery here, so each job does not fetch it again.
_HTTP_CACHE: dict[Any, Any] = {}
_LOCAL = threading.local()


def shared_session() -> requests.Session:
    """This thread's connection pool to Graph, kept alive from one job to the next.

    What requests reads from the environment (proxies for the Graph host, the CA
    bundle) is read here, once per pool: left to requests (`trust_env`), every
    call scans all of os.environ twice for proxy settings, a fifth of a push
    sync's CPU (three calls a sync; bench.scale_graph's numbers in the commit).
    """
    endpoint = get_settings().providers.graph_endpoint
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    session: requests.Session | None = getattr(_LOCAL, "session", None)
    if session is None or getattr(_LOCAL, "made_for", None) != (endpoint, bundle):
        session = requests.Session()
        session.trust_env = False
        session.verify = bundle or True
        session.proxies = requests.utils.get_environ_proxies(endpoint)
        _LOCAL.session, _LOCAL.made_for = session, (endpoint, bundle)
    return session


# -- tokens ------------------------------------------------------------------------------


def msal_app(
    cache: msal.SerializableTokenCache | None = None,
) -> msal.ConfidentialClientApplication:
    settings = get_settings().providers
    if not settings.microsoft_configured:
        raise ProviderError(
            "Microsoft 365 is not configured: set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET",
            permanent=True,
        )
    try:
        return msal.ConfidentialClientApplication(
            settings.microsoft_client_id,
            client_credential=settings.microsoft_client_secret,
            authority=settings.microsoft_authority,
            token_cache=cache,
            http_cache=_HTTP_CACHE,
            instance_discovery=False,
            timeout=TIMEOUT_SECONDS,
        )
    except ValueError as exc:  # the authority's discovery document failed
        raise ProviderError(f"Microsoft sign-in is unreachable: {exc}") from exc
    except requests.RequestException as exc:
        raise ProviderError(f"Microsoft sign-in is unreachable: {exc}") from exc


def token_error(result: dict[str, Any] | None) -> ProviderError:
    if not result:
        return ProviderError(
            "Microsoft has no usable sign-in for this mailbox: reconnect it", needs_reconnect=True
        )
    error = str(result.get("error", ""))
    description = str(result.get("error_description", "")).split("\r\n")[0]
    if error in ("invalid_grant", "interaction_required", "consent_required", "login_required"):
        return ProviderError(
            f"Microsoft refused the stored sign-in ({description}): reconnect the mailbox",
            needs_reconnect=True,
        )
    if error in ("invalid_client", "unauthorized_client"):
        return ProviderError(f"Microsoft refused this app: {description}", permanent=True)
    return ProviderError(f"Microsoft token request failed: {error} {description}")


class MsalToken:
    """Access tokens from the mailbox's MSAL cache; the cache is saved whenever MSAL changes it."""

    def __init__(
        self, credentials: dict[str, Any], save: Callable[[dict[str, Any]], None] | None
    ) -> None:
        if not credentials.get("token_cache") or not credentials.get("home_account_id"):
            raise ProviderError("Microsoft 365 mailbox has no stored sign-in", needs_reconnect=True)
        self.stored = dict(credentials)
        self.save = save
        self.cache = msal.SerializableTokenCache()
        self.cache.deserialize(str(credentials["token_cache"]))
        self._app: msal.ConfidentialClientApplication | None = None
        self._token: str | None = None

    def get(self, *, force: bool = False) -> str:
        if self._token is not None and not force:
            return self._token
        if self._app is None:
            self._app = msal_app(self.cache)
        account = next(
            (
                a
                for a in self._app.get_accounts()
                if a.get("home_account_id") == self.stored["home_account_id"]
            ),
            None,
        )
        if account is None:
            raise token_error(None)
        try:
            result = self._app.acquire_token_silent_with_error(
                list(SCOPES), account, force_refresh=force
            )
        except requests.RequestException as exc:
            raise ProviderError(f"Microsoft sign-in is unreachable: {exc}") from exc
        if self.cache.has_state_changed:
            self._persist()
        if not result or "access_token" not in result:
            raise token_error(result)
        self._token = str(result["access_token"])
        return self._token

    def _persist(self) -> None:
        self.stored["token_cache"] = self.cache.serialize()
        self.cache.has_state_changed = False
        if self.save is not None:
            self.save(dict(self.stored))


# -- errors ------------------------------------------------------------------------------


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _error_text(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error", {})
        return str(error.get("code", "")), str(error.get("message", ""))
    except ValueError:
        return "", response.text[:200]


# Exchange item errors Graph passes on (often as 500): the item itself is broken.
BROKEN_ITEM_CODES = frozenset(
    {"ErrorMimeContentConversionFailed", "ErrorItemCorrupt", "ErrorCorruptData"}
)


def translate(response: requests.Response, doing: str) -> ProviderError:
    code, message = _error_text(response)
    status = response.status_code
    detail = f"{code}: {message}" if code else message
    if code in BROKEN_ITEM_CODES:
        return ProviderError(f"Microsoft Graph cannot read the item ({detail})", permanent=True)
    if code == "ErrorSubmissionQuotaExceeded":
        wait = _retry_after(response)
        return QuotaError(f"Microsoft 365 sending quota: {detail}", daily=True, retry_after=wait)
    if status == 429 or (status in (503, 504) and "Retry-After" in response.headers):
        wait = _retry_after(response)
        # A QuotaError is still a ProviderError with retry_after (a sync backs off);
        # a send pauses the mailbox instead of failing (worker.sync.quota).
        return QuotaError(
            f"Microsoft Graph throttled {doing}: {detail}",
            daily=False,
            retry_after=wait if wait is not None else 30.0,
        )
    if status == 401:
        return ProviderError(
            f"Microsoft Graph refused our token while {doing}: {detail}", needs_reconnect=True
        )
    if status == 403:
        return ProviderError(
            f"Microsoft Graph denied {doing}: {detail} (reconnect and grant access)",
            needs_reconnect=True,
        )
    if 400 <= status < 500:
        return ProviderError(
            f"Microsoft Graph answered {status} while {doing}: {detail}", permanent=True
        )
    return ProviderError(f"Microsoft Graph answered {status} while {doing}: {detail}")
