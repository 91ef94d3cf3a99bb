"""Gmail mailboxes through the Gmail API (google-api-python-client), connected with OAuth.

Owns everything Google: the OAuth connect flow (google-auth-oauthlib, PKCE,
scopes `gmail.readonly` + `gmail.send` and nothing more), token refresh
(google-auth; each refresh is handed to `save_credentials` at once), sending,
incremental sync, `users.watch` for Pub/Sub push, and checking a push's signed
token. It must never import outside this module's job: no database, no
sequences; the engine drives it and the webhook calls `verify_push_token`.

Credentials JSON (encrypted at rest): ``{"refresh_token", "access_token",
"expires_at", "scopes"}``; the OAuth client id/secret come from settings.

Sync keeps ``{"history_id", "synced_at"}``, or ``{"listing": {...}}`` while a
bounded listing is under way::

    no cursor ─────────────▶ getProfile → H; messages.list after:<since> ─▶ {history_id: H}
    {history_id: S} ───────▶ history.list(startHistoryId=S, messageAdded) ─▶ {history_id: last}
      404 (S expired) ─────▶ getProfile → H; messages.list after:<synced_at - 2 days> ─▶ {H}
    {listing: {page}} ─────▶ the interrupted listing goes on from its page

`getProfile` is read *before* a listing so nothing that arrives during it is
missed (seeing a message twice is harmless: the engine's keys are idempotent).
Headers come from `messages.get(format=metadata, metadataHeaders=[...])` with
`fields` trimmed to ids, labels, size and headers, ≤ 50 per batch request.
Quota (15,000 units/user/minute: history.list 2, messages.get 5, list 5, send
100): a 429/403 rate-limit answer becomes `ProviderError(retry_after=…)`, from
`Retry-After` or Gmail's "Retry after <time>", else a minute.

`provider_id` is the Gmail message id: it never changes. Gmail files our own
sends under SENT; history entries that are only SENT, or drafts, are skipped
(5 units each saved), and the engine ignores a message whose Message-ID is ours.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar

import google.auth.exceptions
import google.auth.jwt
import google.oauth2.credentials
import google_auth_httplib2
import httplib2
import requests
from google_auth_oauthlib.flow import Flow
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from config import get_settings
from worker.matching.msgid import normalize_msgid
from worker.sync.base import (
    ChangeBatch,
    HeaderSummary,
    MailboxProvider,
    OutgoingMessage,
    ProviderError,
    SendResult,
)
from worker.sync.headers import summary_from_headers
from worker.sync.mime import build_mime

log = logging.getLogger(__name__)

SCOPES = (
    "https://www.googleapis.com/auth/gmail.readonly",
    "https://www.googleapis.com/auth/gmail.send",
)
METADATA_HEADERS = [
    "Message-ID",
    "In-Reply-To",
    "References",
    "From",
    "Subject",
    "Date",
    "Content-Type",
    "Auto-Submitted",
    "X-Autoreply",
    "X-Autorespond",
    "Precedence",
    "Return-Path",
    "X-Failed-Recipients",
]
METADATA_FIELDS = "id,threadId,labelIds,sizeEstimate,internalDate,payload/headers"
HISTORY_FIELDS = "history(id,messagesAdded/message(id,threadId,labelIds)),nextPageToken,historyId"
BATCH_SIZE = 50  # Google allows 100 calls a batch and advises at most 50
HISTORY_PAGE = 500
LIST_PAGE = 500
REBUILD_WINDOW = timedelta(days=2)
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
        return ProviderError(f"Gmail rate limit while {doing}: {message}", retry_after=wait)
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


def _refresh_failed(exc: google.auth.exceptions.RefreshError) -> ProviderError:
    text = str(exc)
    if any(code in text for code in ("invalid_grant", "invalid_client", "unauthorized_client")):
        return ProviderError(
            "Google refused the stored authorization (revoked or expired): reconnect the mailbox",
            needs_reconnect=True,
        )
    return ProviderError(f"Google token refresh failed: {text}")


def _call(doing: str, fn: Callable[[], T]) -> T:
    """Run one API call, turning every failure into ProviderError."""
    try:
        return fn()
    except HttpError as exc:
        raise translate_http_error(exc, doing) from exc
    except google.auth.exceptions.RefreshError as exc:
        raise _refresh_failed(exc) from exc
    except (google.auth.exceptions.TransportError, httplib2.HttpLib2Error, OSError) as exc:
        raise ProviderError(f"Gmail unreachable while {doing}: {exc}") from exc


# -- tokens ------------------------------------------------------------------------------


class _SavingCredentials(google.oauth2.credentials.Credentials):
    """google-auth credentials that report every refresh, so the new token is saved at once."""

    on_refresh: Callable[[_SavingCredentials], None] | None = None

    def refresh(self, request: Any) -> None:
        super().refresh(request)  # type: ignore[no-untyped-call]
        if self.on_refresh is not None:
            self.on_refresh(self)


def _expiry(credentials: dict[str, Any]) -> datetime | None:
    value = credentials.get("expires_at")
    if not isinstance(value, int | float):
        return None
    # google-auth compares naive UTC datetimes.
    return datetime.fromtimestamp(float(value), UTC).replace(tzinfo=None)


def _oauth_client() -> tuple[str, str]:
    providers = get_settings().providers
    if not (providers.google_client_id and providers.google_client_secret):
        raise ProviderError(
            "Gmail is not configured: set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET", permanent=True
        )
    return providers.google_client_id, providers.google_client_secret


# -- the shared client --------------------------------------------------------------------

_LOCAL = threading.local()
_RESOURCES: dict[str, Any] = {}
_RESOURCES_LOCK = threading.Lock()


def _shared_http() -> httplib2.Http:
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


def _users_resource(endpoint: str) -> Any:
    with _RESOURCES_LOCK:
        resources = _RESOURCES.get(endpoint)
        if resources is None:
            resources = _RESOURCES[endpoint] = _Resources(endpoint)
    return resources


def warm() -> None:
    """Import-time work a forked job would otherwise repeat (the `worker` calls it at start)."""
    _users_resource(get_settings().providers.gmail_api_endpoint)


# -- the provider ------------------------------------------------------------------------


class GmailProvider(MailboxProvider):
    kind: ClassVar[str] = "gmail"

    def __init__(
        self,
        email_address: str,
        credentials: dict[str, Any],
        *,
        get_token: Callable[[], str] | None = None,
    ) -> None:
        self.email = email_address
        self._stored = dict(credentials)
        settings = get_settings().providers
        self._endpoint = settings.gmail_api_endpoint
        if get_token is not None:
            token_source = get_token

            def handler(request: Any, scopes: Any) -> tuple[str, datetime]:
                expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=55)
                return token_source(), expiry

            creds = _SavingCredentials(token=None, refresh_handler=handler)  # type: ignore[no-untyped-call]
        else:
            if not credentials.get("refresh_token"):
                raise ProviderError("Gmail mailbox has no refresh token", needs_reconnect=True)
            client_id, client_secret = _oauth_client()
            creds = _SavingCredentials(  # type: ignore[no-untyped-call]
                token=credentials.get("access_token"),
                refresh_token=credentials["refresh_token"],
                token_uri=settings.google_token_uri,
                client_id=client_id,
                client_secret=client_secret,
                scopes=list(credentials.get("scopes") or SCOPES),
                expiry=_expiry(credentials),
            )
            creds.on_refresh = self._refreshed
        self._credentials = creds
        self._http = google_auth_httplib2.AuthorizedHttp(creds, http=_shared_http())

    def _refreshed(self, creds: _SavingCredentials) -> None:
        expiry = creds.expiry
        self._stored["access_token"] = creds.token
        if expiry is not None:
            self._stored["expires_at"] = expiry.replace(tzinfo=UTC).timestamp()
        log.info("gmail_token_refreshed mailbox=%s", self.email)
        if self.save_credentials is not None:
            self.save_credentials(dict(self._stored))

    def _users(self) -> Any:
        return _users_resource(self._endpoint)

    def _run(self, doing: str, request: Any) -> Any:
        """Execute a request built from the shared resource with this mailbox's credentials."""
        request.http = self._http
        return _call(doing, request.execute)

    # -- checks --------------------------------------------------------------------------

    def verify(self) -> None:
        profile = self._run("reading the profile", self._users().getProfile(userId="me"))
        address = str(profile.get("emailAddress", "")).lower()
        if address != self.email.lower():
            raise ProviderError(
                f"signed in to Google as {address}, not {self.email}", permanent=True
            )
        granted = set(self._stored.get("scopes") or SCOPES)
        missing = [s for s in SCOPES if s not in granted]
        if missing:
            raise ProviderError(
                f"Google access lacks {', '.join(missing)}: reconnect and allow it",
                needs_reconnect=True,
            )

    def profile(self) -> dict[str, Any]:
        result: dict[str, Any] = self._run(
            "reading the profile", self._users().getProfile(userId="me")
        )
        return result

    # -- sending -------------------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> SendResult:
        raw = base64.urlsafe_b64encode(build_mime(message)).decode()
        body: dict[str, Any] = {"raw": raw}
        if message.thread_id:
            body["threadId"] = message.thread_id
        sent = self._run(
            "sending", self._users().messages().send(userId="me", body=body, fields="id,threadId")
        )
        return self._read_back(str(sent["id"]), fallback=message.message_id)

    def _read_back(self, gmail_id: str, fallback: str) -> SendResult:
        """The Message-ID and thread Gmail actually stored for `gmail_id`."""
        stored = self._run(
            "reading back the sent message",
            self._users()
            .messages()
            .get(
                userId="me",
                id=gmail_id,
                format="metadata",
                metadataHeaders=["Message-ID"],
                fields="id,threadId,payload/headers",
            ),
        )
        headers = {
            str(h.get("name", "")).lower(): str(h.get("value", ""))
            for h in stored.get("payload", {}).get("headers", [])
        }
        message_id = normalize_msgid(headers.get("message-id", "")) or fallback
        if message_id != fallback:
            log.info("gmail_message_id_replaced ours=%s stored=%s", fallback, message_id)
        return SendResult(
            message_id=message_id,
            provider_message_id=gmail_id,
            thread_id=str(stored.get("threadId") or "") or None,
        )

    def find_sent(self, message_id: str) -> SendResult | None:
        found = self._run(
            "searching Sent",
            self._users()
            .messages()
            .list(
                userId="me",
                q=f"rfc822msgid:{message_id} in:sent",
                maxResults=1,
                fields="messages/id",
            ),
        )
        messages = found.get("messages") or []
        if not messages:
            return None
        return self._read_back(str(messages[0]["id"]), fallback=message_id)

    # -- sync ----------------------------------------------------------------------------

    def changes(self, cursor: dict[str, Any] | None, since: datetime) -> Iterator[ChangeBatch]:
        state = dict(cursor or {})
        listing = state.get("listing")
        if isinstance(listing, dict):
            yield from self._listing(listing)
            return
        history_id = state.get("history_id")
        if not history_id:
            yield from self._start_listing(since)
            return
        try:
            yield from self._history(str(history_id))
        except _HistoryExpiredError:
            synced = state.get("synced_at")
            window = datetime.fromisoformat(synced) if isinstance(synced, str) else since
            log.warning(
                "gmail_history_expired mailbox=%s start=%s relisting_from=%s",
                self.email,
                history_id,
                (window - REBUILD_WINDOW).isoformat(),
            )
            yield from self._start_listing(window - REBUILD_WINDOW)

    def _start_listing(self, since: datetime) -> Iterator[ChangeBatch]:
        profile = self.profile()
        listing = {
            "after": int(since.timestamp()),
            "history_id": str(profile["historyId"]),
            "page_token": None,
        }
        yield from self._listing(listing)

    def _listing(self, listing: dict[str, Any]) -> Iterator[ChangeBatch]:
        """A bounded listing of mail received after `listing.after`, resumable by page."""
        query = f"after:{int(listing['after'])} -in:sent -in:drafts -in:chats"
        token = listing.get("page_token")
        while True:
            page = self._run(
                "listing messages",
                self._users()
                .messages()
                .list(
                    userId="me",
                    q=query,
                    maxResults=LIST_PAGE,
                    pageToken=token,
                    fields="messages/id,nextPageToken",
                ),
            )
            ids = [str(m["id"]) for m in page.get("messages") or []]
            token = page.get("nextPageToken")
            summaries = self._summaries(ids)
            if token:
                cursor: dict[str, Any] = {"listing": {**listing, "page_token": token}}
            else:
                cursor = {
                    "history_id": listing["history_id"],
                    "synced_at": datetime.now(UTC).isoformat(),
                }
            yield ChangeBatch(messages=summaries, cursor=cursor)
            if not token:
                return

    def _history(self, start: str) -> Iterator[ChangeBatch]:
        token: str | None = None
        seen: set[str] = set()
        while True:
            request = (
                self._users()
                .history()
                .list(
                    userId="me",
                    startHistoryId=start,
                    historyTypes="messageAdded",
                    maxResults=HISTORY_PAGE,
                    pageToken=token,
                    fields=HISTORY_FIELDS,
                )
            )
            request.http = self._http
            try:
                page = request.execute()
            except HttpError as exc:
                if int(exc.resp.status) == 404:
                    raise _HistoryExpiredError from exc
                raise translate_http_error(exc, "reading history") from exc
            except google.auth.exceptions.RefreshError as exc:
                raise _refresh_failed(exc) from exc
            except (google.auth.exceptions.TransportError, httplib2.HttpLib2Error, OSError) as exc:
                raise ProviderError(f"Gmail unreachable while reading history: {exc}") from exc
            records = page.get("history") or []
            ids: list[str] = []
            for record in records:
                for added in record.get("messagesAdded") or []:
                    message = added.get("message") or {}
                    message_id = str(message.get("id", ""))
                    if message_id and message_id not in seen and _worth_reading(message):
                        seen.add(message_id)
                        ids.append(message_id)
            token = page.get("nextPageToken")
            if token and records:
                resume = str(records[-1]["id"])
            else:
                resume = str(page.get("historyId") or start)
            cursor = {"history_id": resume, "synced_at": datetime.now(UTC).isoformat()}
            yield ChangeBatch(messages=self._summaries(ids), cursor=cursor)
            if not token:
                return

    def _summaries(self, ids: list[str]) -> list[HeaderSummary]:
        found: dict[str, HeaderSummary] = {}
        failures: list[ProviderError] = []

        def collect(request_id: str, response: Any, exception: Exception | None) -> None:
            if exception is None:
                found[str(response["id"])] = _summary(response)
            elif isinstance(exception, HttpError) and int(exception.resp.status) == 404:
                pass  # deleted between the listing and now: nothing to see
            elif isinstance(exception, HttpError):
                failures.append(translate_http_error(exception, "reading headers"))
            else:
                failures.append(ProviderError(f"Gmail header read failed: {exception}"))

        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            requests_ = [self._metadata_request(message_id) for message_id in chunk]
            if len(chunk) == 1:
                # One message (the usual push): a plain call, not a one-part batch.
                try:
                    collect(chunk[0], requests_[0].execute(), None)
                except HttpError as exc:
                    collect(chunk[0], None, exc)
                except google.auth.exceptions.RefreshError as exc:
                    raise _refresh_failed(exc) from exc
                except (
                    google.auth.exceptions.TransportError,
                    httplib2.HttpLib2Error,
                    OSError,
                ) as exc:
                    raise ProviderError(f"Gmail unreachable while reading headers: {exc}") from exc
            else:
                batch = BatchHttpRequest(
                    callback=collect, batch_uri=self._endpoint + "batch/gmail/v1"
                )
                for message_id, request in zip(chunk, requests_, strict=True):
                    batch.add(request, request_id=message_id)
                _call("reading headers", functools.partial(batch.execute, http=self._http))
            if failures:
                # Rate limits first: they say how long to wait.
                failures.sort(key=lambda f: f.retry_after is None)
                raise failures[0]
        return [found[i] for i in ids if i in found]

    def _metadata_request(self, message_id: str) -> Any:
        request = (
            self._users()
            .messages()
            .get(
                userId="me",
                id=message_id,
                format="metadata",
                metadataHeaders=METADATA_HEADERS,
                fields=METADATA_FIELDS,
            )
        )
        request.http = self._http  # each request (and batch part) carries this mailbox's token
        return request

    def fetch(self, fetch_ref: str, max_bytes: int) -> bytes:
        message = self._run(
            "fetching a message",
            self._users().messages().get(userId="me", id=fetch_ref, format="raw", fields="raw"),
        )
        raw = base64.urlsafe_b64decode(str(message.get("raw", "")) + "==")
        return raw[:max_bytes]

    # -- push ----------------------------------------------------------------------------

    def start_watch(self, topic: str) -> datetime:
        """users.watch on INBOX to the Pub/Sub topic. Returns when the watch expires."""
        body = {"topicName": topic, "labelIds": ["INBOX"], "labelFilterBehavior": "include"}
        answer = self._run("starting the Gmail watch", self._users().watch(userId="me", body=body))
        return datetime.fromtimestamp(int(answer["expiration"]) / 1000, UTC)

    def stop_watch(self) -> None:
        self._run("stopping the Gmail watch", self._users().stop(userId="me"))

    def revoke(self) -> None:
        """Give the grant back to Google (disconnect). Best effort: a dead token is fine."""
        token = self._stored.get("refresh_token") or self._stored.get("access_token")
        if not token:
            return
        try:
            requests.post(
                get_settings().providers.google_revoke_uri,
                data={"token": token},
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=TIMEOUT_SECONDS,
            )
        except requests.RequestException as exc:
            log.warning("gmail_revoke_failed mailbox=%s error=%s", self.email, exc)


class _HistoryExpiredError(Exception):
    """history.list answered 404: the start id is older than Gmail keeps."""


def _worth_reading(message: dict[str, Any]) -> bool:
    labels = set(message.get("labelIds") or [])
    if labels & {"DRAFT", "CHAT", "SPAM", "TRASH"}:
        return False
    # Our own sends (and the user's): the engine would call them "own" anyway.
    return not ("SENT" in labels and "INBOX" not in labels)


def _summary(resource: dict[str, Any]) -> HeaderSummary:
    headers: dict[str, str] = {}
    for header in resource.get("payload", {}).get("headers", []):
        name = str(header.get("name", "")).lower()
        if name and name not in headers:  # the first of a repeated header, as parsers do
            headers[name] = str(header.get("value", ""))
    internal = str(resource.get("internalDate") or "")
    size = str(resource.get("sizeEstimate") or "")
    return summary_from_headers(
        headers,
        provider_id=str(resource["id"]),
        fetch_ref=str(resource["id"]),
        size=int(size) if size.isdigit() else None,
        received_at=datetime.fromtimestamp(int(internal) / 1000, UTC)
        if internal.isdigit()
        else None,
    )


# -- the OAuth connect flow ------------------------------------------------------------


def _flow(redirect_uri: str, code_verifier: str | None = None) -> Flow:
    client_id, client_secret = _oauth_client()
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


# -- verifying a Pub/Sub push ----------------------------------------------------------
#
# Google's push token is an OIDC ID token signed with one of Google's keys, published
# with Cache-Control: max-age at GMAIL_PUSH_CERTS_URL. The certificates are kept for
# that max-age (clamped to CERTS_MIN/MAX_SECONDS; CERTS_TTL_SECONDS without one). A
# token naming a key id we do not hold may mean Google rotated early, so the list is
# fetched again, but at most once per CERTS_REFETCH_SECONDS per process: a stream of
# tokens with made-up key ids costs at most one fetch a minute, each refused. When a
# fetch fails, certificates already held are used until a later fetch works.

CERTS_TTL_SECONDS = 3600
CERTS_MIN_SECONDS = 60
CERTS_MAX_SECONDS = 24 * 3600
CERTS_REFETCH_SECONDS = 60.0
PUSH_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
_JWT: Any = google.auth.jwt  # untyped functions
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)


class _CertCache:
    """Google's push certificates per URL, their expiry, and the last fetch attempt."""

    def __init__(self) -> None:
        # Held while deciding and fetching: a request that needs a fetch another one
        # is making waits for it and reads its result instead of fetching again.
        self.fetching = threading.Lock()
        self.certs: dict[str, tuple[float, dict[str, str]]] = {}
        self.fetched_at: dict[str, float] = {}

    def for_key(self, url: str, kid: str) -> dict[str, str]:
        """Certificates that should hold `kid`; fetched only when due and allowed.

        Raises:
            requests.RequestException, ValueError: the fetch failed and nothing is held.
        """
        expires, certs = self.certs.get(url, (0.0, {}))
        if kid in certs and time.monotonic() < expires:
            return certs  # the hot path: no lock
        with self.fetching:
            now = time.monotonic()
            expires, certs = self.certs.get(url, (0.0, {}))
            if kid in certs and now < expires:
                return certs
            last = self.fetched_at.get(url)
            if last is not None and now - last < CERTS_REFETCH_SECONDS:
                return certs  # fetched a moment ago: the key id is not Google's
            self.fetched_at[url] = now
            try:
                fetched, max_age = _fetch_certs(url)
            except (requests.RequestException, ValueError) as exc:
                if certs:
                    log.warning("gmail_push_certs_stale error=%s", type(exc).__name__)
                    return certs
                raise
            self.certs[url] = (now + max_age, fetched)
        log.info("gmail_push_certs_fetched keys=%s max_age=%s", len(fetched), max_age)
        return fetched

    def forget(self) -> None:
        with self.fetching:
            self.certs.clear()
            self.fetched_at.clear()


def _fetch_certs(url: str) -> tuple[dict[str, str], int]:
    """Google's {kid: PEM} and how long its answer says to keep it."""
    answer = requests.get(url, timeout=10)
    answer.raise_for_status()
    body = answer.json()
    if not isinstance(body, dict):
        raise ValueError("the certificates are not a JSON object")
    match = _MAX_AGE.search(answer.headers.get("Cache-Control", ""))
    max_age = int(match.group(1)) if match else CERTS_TTL_SECONDS
    return {str(k): str(v) for k, v in body.items()}, min(
        max(max_age, CERTS_MIN_SECONDS), CERTS_MAX_SECONDS
    )


_CERTS = _CertCache()


def forget_push_certs() -> None:
    """Drop the cached certificates and fetch times (tests with another fake Google)."""
    _CERTS.forget()


class PushTokenError(Exception):
    """The push carried no valid Google-signed token for us."""


def verify_push_token(token: str) -> dict[str, Any]:
    """Check a Pub/Sub push's OIDC token: Google's signature, our audience, Google's
    issuer, and the push subscription's service account (GMAIL_PUSH_SERVICE_ACCOUNT,
    with a verified email).

    Without GMAIL_PUSH_SERVICE_ACCOUNT any Google-signed token for our audience would
    do (anyone can mint one with their own Google project): production refuses to
    start that way when push is set up (config.settings) and refuses every token here
    otherwise; development accepts it, with a warning.
    """
    settings = get_settings()
    providers = settings.providers
    expected = providers.gmail_push_service_account
    if expected is None and settings.is_production:
        raise PushTokenError("GMAIL_PUSH_SERVICE_ACCOUNT is not set: signed pushes are refused")
    try:
        header = _JWT.decode_header(token)
        kid = header.get("kid") if isinstance(header, dict) else None
        if not isinstance(kid, str) or not kid:
            raise PushTokenError("push token names no key id")
        certs = _CERTS.for_key(providers.gmail_push_certs_url, kid)
        if kid not in certs:
            raise PushTokenError("push token names a key id Google does not publish")
        claims: dict[str, Any] = _JWT.decode(
            token, certs=certs, audience=providers.gmail_push_audience
        )
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        raise PushTokenError(f"push token rejected: {exc}") from exc
    except requests.RequestException as exc:
        raise PushTokenError(f"Google's push certificates are unreachable: {exc}") from exc
    if claims.get("iss") not in PUSH_ISSUERS:
        raise PushTokenError(f"push token issuer {claims.get('iss')!r} is not Google")
    if expected is None:
        log.warning("gmail_push_unchecked_account reason=GMAIL_PUSH_SERVICE_ACCOUNT unset")
    elif claims.get("email") != expected or claims.get("email_verified") is not True:
        raise PushTokenError(f"push token is for {claims.get('email')!r}, not {expected!r}")
    return claims
