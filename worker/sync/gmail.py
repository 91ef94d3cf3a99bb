"""Gmail mailboxes through the Gmail API (google-api-python-client): the provider.

Owns a Gmail mailbox's sending, incremental sync, `users.watch` for Pub/Sub
push, and giving the grant back. Its neighbours own the rest of Google: the
client, its errors and token refresh (`gmail_api`; each refresh is handed to
`save_credentials` at once), the OAuth connect flow (`gmail_oauth`), and
checking a push's signed token (`gmail_push`). It must never import outside
its job: no database, no sequences; the engine drives it.

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
sends under SENT; history entries that are only SENT are not read as replies
(5 units each saved) but handed on as Sent-folder copies (`in_sent`, read by
`read_sent` only while an add-on's draft waits: `worker.sync.gmail_sent`),
drafts are skipped, and the engine ignores a message whose Message-ID is ours.
Every label is synced and watched but the skipped folders' (SIGHTLINE_SKIP_FOLDERS:
SENT, DRAFT, TRASH, SPAM), so a reply a filter kept out of the Inbox is seen.
Each summary carries the message's threadId: a reply whose headers were dropped
still answers us if Gmail threaded it with ours (worker.matching.threads).
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import google.auth.exceptions
import google_auth_httplib2
import httplib2
import requests
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
    SentCopy,
)
from worker.sync.folders import gmail_skipped_labels, skip_list
from worker.sync.gmail_api import (
    SCOPES,
    TIMEOUT_SECONDS,
    SavingCredentials,
    call_api,
    oauth_client,
    refresh_failed,
    shared_http,
    stored_expiry,
    translate_http_error,
    users_resource,
)
from worker.sync.gmail_sent import added_messages, sent_copy
from worker.sync.headers import summary_from_headers
from worker.sync.mime import build_mime

log = logging.getLogger(__name__)

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
# A SENT message read for an add-on's tokens: its headers and part tree, nothing more.
FULL_FIELDS = "id,threadId,payload"
BATCH_SIZE = 50  # Google allows 100 calls a batch and advises at most 50
HISTORY_PAGE = 500
LIST_PAGE = 500
REBUILD_WINDOW = timedelta(days=2)


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
        self._skipped = gmail_skipped_labels(skip_list(credentials))
        if get_token is not None:
            token_source = get_token

            def handler(request: Any, scopes: Any) -> tuple[str, datetime]:
                expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=55)
                return token_source(), expiry

            creds = SavingCredentials(token=None, refresh_handler=handler)  # type: ignore[no-untyped-call]
        else:
            if not credentials.get("refresh_token"):
                raise ProviderError("Gmail mailbox has no refresh token", needs_reconnect=True)
            client_id, client_secret = oauth_client()
            creds = SavingCredentials(  # type: ignore[no-untyped-call]
                token=credentials.get("access_token"),
                refresh_token=credentials["refresh_token"],
                token_uri=settings.google_token_uri,
                client_id=client_id,
                client_secret=client_secret,
                scopes=list(credentials.get("scopes") or SCOPES),
                expiry=stored_expiry(credentials),
            )
            creds.on_refresh = self._refreshed
        self._credentials = creds
        self._http = google_auth_httplib2.AuthorizedHttp(creds, http=shared_http())

    def _refreshed(self, creds: SavingCredentials) -> None:
        expiry = creds.expiry
        self._stored["access_token"] = creds.token
        if expiry is not None:
            self._stored["expires_at"] = expiry.replace(tzinfo=UTC).timestamp()
        log.info("gmail_token_refreshed mailbox=%s", self.email)
        if self.save_credentials is not None:
            self.save_credentials(dict(self._stored))

    def _users(self) -> Any:
        return users_resource(self._endpoint)

    def _run(self, doing: str, request: Any) -> Any:
        """Execute a request built from the shared resource with this mailbox's credentials."""
        request.http = self._http
        return call_api(doing, request.execute)

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
                raise refresh_failed(exc) from exc
            except (google.auth.exceptions.TransportError, httplib2.HttpLib2Error, OSError) as exc:
                raise ProviderError(f"Gmail unreachable while reading history: {exc}") from exc
            records = page.get("history") or []
            ids, sent = added_messages(records, seen, self._skipped)
            token = page.get("nextPageToken")
            if token and records:
                resume = str(records[-1]["id"])
            else:
                resume = str(page.get("historyId") or start)
            cursor = {"history_id": resume, "synced_at": datetime.now(UTC).isoformat()}
            yield ChangeBatch(messages=self._summaries(ids) + sent, cursor=cursor)
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
                    raise refresh_failed(exc) from exc
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
                call_api("reading headers", functools.partial(batch.execute, http=self._http))
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

    def read_sent(self, fetch_ref: str) -> SentCopy | None:
        """A SENT message in one call (5 units): ``format=full`` hands the text parts
        over decoded and attachments as ids only, so no attachment is downloaded."""
        message = self._run(
            "reading a sent message",
            self._users()
            .messages()
            .get(userId="me", id=fetch_ref, format="full", fields=FULL_FIELDS),
        )
        return sent_copy(message)

    # -- push ----------------------------------------------------------------------------

    def start_watch(self, topic: str) -> datetime:
        """users.watch to the Pub/Sub topic on all mail but the skipped labels.

        A reply a filter labelled "Customers" and kept out of the Inbox must push
        too, so the watch excludes (``labelFilterBehavior: exclude``) the system
        labels of the skipped folders rather than include INBOX only. Returns when
        the watch expires.
        """
        body = {
            "topicName": topic,
            "labelIds": sorted(self._skipped),
            "labelFilterBehavior": "exclude",
        }
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
        thread_id=str(resource.get("threadId") or ""),
    )
