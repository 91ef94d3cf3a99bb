"""The Gmail API client: its errors in our words, tokens that save each refresh, one pool.

Every Gmail call (`worker.sync.gmail`, `worker.sync.gmail_oauth`) goes through
`call_api`, so whatever google-api-python-client, google-auth or httplib2
raises becomes one `ProviderError` that says whether to wait (a rate limit,
with Gmail's own Retry-After), reconnect (a revoked grant) or give up. Tokens
are google-auth credentials whose every refresh is reported at once
(`SavingCredentials`), so a refreshed access token is saved before the job
that refreshed it can die.

What is built once per process, not per job: the Gmail resources from the
shipped discovery document (`users_resource`, warmed by `warm` in the
`worker` process) and, per thread, the HTTP connection pool (`shared_http`).
This module holds no mailbox state and never touches the database.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import google.auth.exceptions
import google.oauth2.credentials
import httplib2
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from config import get_settings
from worker.sync.base import ProviderError
from worker.sync.quota import QuotaError

SCOPES = (
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
)
TIMEOUT_SECONDS = 60
DEFAULT_RETRY_AFTER = 60.0  # the per-user quota is counted per minute
RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded", "dailyLimitExceeded"}
)
_RETRY_AT = re.compile(r"Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)")
T = TypeVar("T")


# -- errors ------------------------------------------------------------------------------


def _error_reasons(exc: HttpError) -> tuple[set[str], str]:
    try:
        body = json.loads(exc.content.decode("utf-8", "replace"))
        error = body.get("error", {})
        reasons = {str(e.get("reason")) for e in error.get("errors", []) if isinstance(e, dict)}
        return reasons, str(error.get("message") or exc.reason or "")
    except (ValueError, AttributeError):
        return set(), str(exc.reason or "")


def retry_after_seconds(headers: Any, message: str, now: float | None = None) -> float:
    """Seconds to wait: `Retry-After` (seconds or HTTP date), else Gmail's 'Retry after <time>'."""
    now = time.time() if now is None else now
    value = headers.get("retry-after") if headers is not None else None
    if value:
        text = str(value).strip()
        if text.isdigit():
            return float(text)
        try:
            return max(0.0, parsedate_to_datetime(text).timestamp() - now)
        except (TypeError, ValueError):
            pass
    found = _RETRY_AT.search(message)
    if found:
        stamp = datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))
        return max(1.0, stamp.timestamp() - now)
    return DEFAULT_RETRY_AFTER


def translate_http_error(exc: HttpError, doing: str) -> ProviderError:
    status = int(exc.resp.status)
    reasons, message = _error_reasons(exc)
    if status == 429 or (status == 403 and reasons & RATE_LIMIT_REASONS):
        wait = retry_after_seconds(exc.resp, message)
        # A QuotaError is still a ProviderError with retry_after (a sync backs off);
        # a send pauses the mailbox instead of failing (worker.sync.quota).
        daily = "dailyLimitExceeded" in reasons or "sending limit" in message.lower()
        said_when = bool(exc.resp.get("retry-after")) or bool(_RETRY_AT.search(message))
        # A daily quota with no time given resets at midnight, not in DEFAULT_RETRY_AFTER.
        return QuotaError(
            f"Gmail rate limit while {doing}: {message}",
            daily=daily,
            retry_after=wait if said_when or not daily else None,
        )
    if status == 401:
        return ProviderError(
            f"Gmail refused our access while {doing}: {message}", needs_reconnect=True
        )
    if status == 403 and reasons & {"insufficientPermissions", "forbidden", "authError"}:
        return ProviderError(
            f"Gmail denied {doing}: {message} (reconnect and grant access)", needs_reconnect=True
        )
    if status in (400, 403, 404):
        return ProviderError(f"Gmail answered {status} while {doing}: {message}", permanent=True)
    return ProviderError(f"Gmail answered {status} while {doing}: {message}")


def refresh_failed(exc: google.auth.exceptions.RefreshError) -> ProviderError:
    text = str(exc)
    if any(code in text for code in ("invalid_grant", "invalid_client", "unauthorized_client")):
        return ProviderError(
            "Google refused the stored authorization (revoked or expired): reconnect the mailbox",
            needs_reconnect=True,
        )
    return ProviderError(f"Google token refresh failed: {text}")


def call_api(doing: str, fn: Callable[[], T]) -> T:
    """Run one API call, turning every failure into ProviderError."""
    try:
        return fn()
    except HttpError as exc:
        raise translate_http_error(exc, doing) from exc
    except google.auth.exceptions.RefreshError as exc:
        raise refresh_failed(exc) from exc
    except (google.auth.exceptions.TransportError, httplib2.HttpLib2Error, OSError) as exc:
        raise ProviderError(f"Gmail unreachable while {doing}: {exc}") from exc


# -- tokens ------------------------------------------------------------------------------


class SavingCredentials(google.oauth2.credentials.Credentials):
    """google-auth credentials that report every refresh, so the new token is saved at once."""

    on_refresh: Callable[[SavingCredentials], None] | None = None

    def refresh(self, request: Any) -> None:
        super().refresh(request)  # type: ignore[no-untyped-call]
        if self.on_refresh is not None:
            self.on_refresh(self)


def stored_expiry(credentials: dict[str, Any]) -> datetime | None:
    value = credentials.get("expires_at")
    if not isinstance(value, int | float):
        return None
    # google-auth compares naive UTC datetimes.
    return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)


def oauth_client() -> tuple[str, str]:
    providers = get_settings().providers
    if not (providers.google_client_id and providers.google_client_secret):
        raise ProviderError(
            "Gmail is not configured: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET", permanent=True
        )
    return providers.google_client_id, providers.google_client_secret


# -- the shared client --------------------------------------------------------------------

_IRI2URI = httplib2.iri2uri


def ascii_iri2uri(uri: Any) -> Any:
    """httplib2's `iri2uri` without its per-character pass over an ASCII URI.

    httplib2 runs every request's URI through `iri2uri`, which %-escapes the
    non-ASCII characters of an IRI by calling a Python function for each
    character: ~1.3 ms for a Gmail request's 380-character URI, 16 % of a push
    sync's CPU (cProfile, `python -m bench.sync_cpu --profile`). That pass leaves
    an ASCII string as it is, so for one the rest of `iri2uri` (the authority's
    IDNA form, urlsplit/urlunsplit) is the whole answer; anything else goes to
    httplib2's own (tests/unit/test_gmail_uri.py compares the two).
    """
    if not (isinstance(uri, str) and uri.isascii()):
        return _IRI2URI(uri)
    scheme, authority, path, query, fragment = urllib.parse.urlsplit(uri)
    authority = authority.encode("idna").decode("utf-8")
    return urllib.parse.urlunsplit((scheme, authority, path, query, fragment))


# Http.request looks `iri2uri` up in its module on each call (httplib2 is pinned).
httplib2.iri2uri = ascii_iri2uri

_LOCAL = threading.local()
_RESOURCES: dict[str, Any] = {}
_RESOURCES_LOCK = threading.Lock()


def shared_http() -> httplib2.Http:
    """This thread's connection pool: kept alive from one job to the next in a process.

    A new connection costs a TLS handshake and, in httplib2, loading the CA
    bundle again (about 25 ms): most of a sync's CPU when each sync opened one.
    """
    http = getattr(_LOCAL, "http", None)
    if http is None:
        http = _LOCAL.http = httplib2.Http(timeout=TIMEOUT_SECONDS)
    return http


class _Resources:
    """The Gmail resources built once per process from the shipped discovery document.

    Building them costs milliseconds (hundreds of method objects, every time
    `users().messages()` is called); requests made from them are given each
    mailbox's authorized http when they run (`GmailProvider._run`).
    """

    def __init__(self, endpoint: str) -> None:
        service = build(
            "gmail",
            "v1",
            http=httplib2.Http(),  # never used: every request gets its mailbox's http
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": endpoint},
        )
        self.users = service.users()
        self.messages_ = self.users.messages()
        self.history_ = self.users.history()

    def messages(self) -> Any:
        return self.messages_

    def history(self) -> Any:
        return self.history_

    def __getattr__(self, name: str) -> Any:  # getProfile, watch, stop
        return getattr(self.users, name)


def users_resource(endpoint: str) -> Any:
    with _RESOURCES_LOCK:
        resources = _RESOURCES.get(endpoint)
        if resources is None:
            resources = _RESOURCES[endpoint] = _Resources(endpoint)
    return resources


def warm() -> None:
    """Import-time work a forked job would otherwise repeat (the `worker` calls it at start)."""
    users_resource(get_settings().providers.gmail_api_endpoint)
