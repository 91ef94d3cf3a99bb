"""Microsoft 365 mailboxes through Microsoft Graph: the provider.

Owns a Graph mailbox's sending, delta sync and change-notification
subscriptions. Its neighbours own the rest: MSAL tokens (saved back through
`save_credentials` the moment the cache changes: Microsoft rotates refresh
tokens), the connection pool and Graph's errors in our words (`graph_api`),
and the OAuth connect flow (`graph_oauth`). It must never touch the database
or sequences; the engine and `worker.sync.push` drive it. HTTP goes through
`requests`; links the service hands back (nextLink, deltaLink) are only
followed on the configured Graph host.

Credentials JSON (encrypted at rest): ``{"token_cache": <MSAL cache>,
"home_account_id", "username"}``; the app's client id/secret come from settings.

Sending is draft + send: the draft is created from our MIME (so our Message-ID,
In-Reply-To and References are kept), its `internetMessageId` and
`conversationId` are read from the create answer, then it is sent. Graph item
ids change when a message moves (the sent draft becomes a new item), so the
engine's `provider_id` is the Message-ID (``mid:<id>``) and `fetch()` falls back
to a lookup by Message-ID when the id it was given is gone.

Sync is a delta query on every mail folder but the skipped ones (Sent Items,
Drafts, Deleted Items, Junk Email, Outbox, Conversation History, Sync Issues:
listed by `graph_folders`), each folder with its own delta state in
``cursor["folders"][<folder id>]``. The list is kept in ``cursor["listing"]``
and trusted for `folders.FOLDER_LIST_KEPT`; a sync that reads nothing new in
the folders it knows, or finds one gone (404), lists the tree again and reads
the folders made since::

    no state ───────────▶ delta?$filter=receivedDateTime ge <since>  ─ pages ─▶ {delta_link}
    {next_link} ────────▶ the round goes on from its page             (resumable)
    {delta_link} ───────▶ what arrived since                          ─ pages ─▶ {delta_link}
      410 Gone ─────────▶ a new round from <synced_at - 2 days>

A cursor from when Inbox alone was read (``{"delta_link"}`` at the top) goes
on as Inbox's. Change notifications: one subscription on ``me/messages``
(created), renewed by PATCH; one made on Inbox alone is replaced.

Each row carries only a few properties and, as single-value extended
properties, PidTagInReplyToId (0x1042), PidTagInternetReferences (0x1039) and
the message class (0x001A, to tell NDRs): the headers the matcher needs, about
a kilobyte a message, never a body. 429 (and 503) with Retry-After become
`ProviderError(retry_after=…)`.
"""

from __future__ import annotations

import base64
import email.utils
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import quote

import requests

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
from worker.sync.folders import FolderGoneError, FolderReads, skip_list
from worker.sync.graph_api import TIMEOUT_SECONDS, MsalToken, shared_session, translate
from worker.sync.graph_folders import legacy_inbox_cursor, watched_folders, well_known_ids
from worker.sync.headers import summary_from_headers
from worker.sync.mime import build_mime
from worker.sync.sent_copy import read_sent_since

log = logging.getLogger(__name__)

IN_REPLY_TO = "String 0x1042"
REFERENCES = "String 0x1039"
MESSAGE_CLASS = "String 0x001A"
DELTA_SELECT = "internetMessageId,conversationId,subject,from,receivedDateTime"
DELTA_EXPAND = (
    "singleValueExtendedProperties($filter="
    f"id eq '{IN_REPLY_TO}' or id eq '{REFERENCES}' or id eq '{MESSAGE_CLASS}')"
)
PAGE_SIZE = 100
REBUILD_WINDOW = timedelta(days=2)
# One subscription on every message of the mailbox, not one per folder: Graph allows
# 1,000 Outlook subscriptions per mailbox for all apps together, a folder made later
# is covered without a new subscription, and the one row, clientState and renewal
# stay as they were. The price: a notification for our own drafts and sent copies
# too, each one sync request (queued once while one waits).
SUBSCRIPTION_RESOURCE = "me/messages"
INBOX_ONLY_RESOURCES = ("me/mailfolders('inbox')/messages",)
# Outlook message subscriptions live at most 10,080 minutes; ask for a little less.
SUBSCRIPTION_LIFETIME = timedelta(minutes=10_000)


class _DeltaExpiredError(Exception):
    """The delta or skip token is no longer kept (410 Gone)."""


_Page = tuple[list[HeaderSummary], dict[str, Any]]  # a page's summaries, the folder's state


# -- the provider ------------------------------------------------------------------------


class GraphProvider(MailboxProvider):
    kind: ClassVar[str] = "graph"

    def __init__(
        self,
        email_address: str,
        credentials: dict[str, Any],
        *,
        get_token: Callable[[], str] | None = None,
    ) -> None:
        self.email = email_address
        self.endpoint = get_settings().providers.graph_endpoint
        self._credentials = dict(credentials)
        self._get_token = get_token
        self._msal: MsalToken | None = None
        self.skip_folders = skip_list(credentials)
        self._sent_since = read_sent_since(credentials)  # Sent read while a draft waits
        self.session = shared_session()

    def _token(self, *, force: bool = False) -> str:
        if self._get_token is not None:
            return self._get_token()
        if self._msal is None:
            self._msal = MsalToken(self._credentials, self.save_credentials)
        return self._msal.get(force=force)

    def close(self) -> None:
        """Nothing to release: the connection pool is the thread's, kept for the next job."""

    def request(
        self,
        method: str,
        url: str,
        doing: str,
        *,
        expect: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> requests.Response:
        """One Graph call: our token, one retry after a refresh on 401, errors translated."""
        if url.startswith("/"):
            url = self.endpoint + url
        elif not url.startswith(self.endpoint + "/"):
            raise ProviderError(
                f"Microsoft Graph sent a link outside {self.endpoint}", permanent=True
            )
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in range(2):
            headers["Authorization"] = f"Bearer {self._token(force=attempt > 0)}"
            try:
                response = self.session.request(
                    method, url, headers=headers, timeout=TIMEOUT_SECONDS, **kwargs
                )
            except requests.RequestException as exc:
                raise ProviderError(f"Microsoft Graph unreachable while {doing}: {exc}") from exc
            if response.status_code == 401 and attempt == 0 and self._get_token is None:
                continue
            if response.status_code in expect:
                return response
            if response.status_code == 410:
                raise _DeltaExpiredError
            raise translate(response, doing)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- checks --------------------------------------------------------------------------

    def verify(self) -> None:
        me = self.request("GET", "/me?$select=mail,userPrincipalName", "reading the profile").json()
        addresses = {
            str(me.get("mail") or "").lower(),
            str(me.get("userPrincipalName") or "").lower(),
        }
        if self.email.lower() not in addresses:
            shown = me.get("mail") or me.get("userPrincipalName")
            raise ProviderError(
                f"signed in to Microsoft as {shown}, not {self.email}", permanent=True
            )
        self.request("GET", "/me/mailFolders/inbox?$select=id", "opening Inbox")

    # -- sending -------------------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> SendResult:
        mime = base64.b64encode(build_mime(message))
        draft = self.request(
            "POST",
            "/me/messages",
            "creating the draft",
            expect=(201,),
            data=mime,
            headers={"Content-Type": "text/plain"},
        ).json()
        stored = normalize_msgid(str(draft.get("internetMessageId") or "")) or message.message_id
        self.request(
            "POST",
            f"/me/messages/{quote(str(draft['id']), safe='')}/send",
            "sending",
            expect=(202,),
        )
        if stored != message.message_id:
            log.info("graph_message_id_replaced ours=%s stored=%s", message.message_id, stored)
        return SendResult(
            message_id=stored,
            provider_message_id=str(draft["id"]),
            thread_id=str(draft.get("conversationId") or "") or None,
        )

    def _by_message_id(
        self, message_id: str, folder: str | None, select: str
    ) -> list[dict[str, Any]]:
        literal = message_id.replace("'", "''")
        base = f"/me/mailFolders/{folder}/messages" if folder else "/me/messages"
        answer = self.request(
            "GET",
            base,
            "looking a message up",
            params={"$filter": f"internetMessageId eq '{literal}'", "$select": select, "$top": "5"},
        ).json()
        return list(answer.get("value") or [])

    def find_sent(self, message_id: str) -> SendResult | None:
        found = self._by_message_id(message_id, "sentitems", "id,internetMessageId,conversationId")
        if not found:
            return None
        item = found[0]
        return SendResult(
            message_id=normalize_msgid(str(item.get("internetMessageId") or "")) or message_id,
            provider_message_id=str(item["id"]),
            thread_id=str(item.get("conversationId") or "") or None,
        )

    # -- sync ----------------------------------------------------------------------------

    def _first_round(self, folder_id: str, since: datetime) -> str:
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = (
            f"$select={DELTA_SELECT}&$expand={quote(DELTA_EXPAND, safe='(),=')}"
            f"&$filter={quote(f'receivedDateTime ge {stamp}', safe='')}"
        )
        folder = quote(folder_id, safe="")
        return f"{self.endpoint}/me/mailFolders/{folder}/messages/delta?{query}"

    def changes(self, cursor: dict[str, Any] | None, since: datetime) -> Iterator[ChangeBatch]:
        state = dict(cursor or {})
        before = dict(state.get("folders") or {})
        known = dict(state.get("well_known") or {})
        legacy = legacy_inbox_cursor(state)
        if legacy is not None:  # written when Inbox alone was read: it goes on from there
            known = well_known_ids(self.request, {"inbox"}, known) | known
            if known.get("inbox"):
                before.setdefault(known["inbox"], legacy)
        # Sent Items too while an add-on's draft waits (worker.sync.sent_mail).
        plan = FolderReads.start(
            state, before, known, self.skip_folders, self._list, self._sent_since
        )

        # Pages are handed on together, a batch once PAGE_SIZE messages are in hand
        # and the rest at the end: a push sync reads two or more folders with one new
        # message between them, and each batch costs the engine a transaction and a
        # cursor write. A failure re-lists what was not handed on yet, as a crash does.
        pending: list[HeaderSummary] = []
        unsent = False  # pages read since the last batch (maybe without a message)
        for listed in plan.read(self._folder_changes, since):
            pending += listed
            unsent = True
            if len(pending) >= PAGE_SIZE:
                yield ChangeBatch(pending, plan.cursor())
                pending, unsent = [], False
        if unsent:
            yield ChangeBatch(pending, plan.cursor())

    def _list(self, known: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """(ids of the folders to read, the well-known ids to keep) from the folder tree."""
        folders, ids = watched_folders(self.request, self.skip_folders, known)
        return [f.id for f in folders], {**known, **ids}

    def _folder_changes(
        self, folder_id: str, state: dict[str, Any] | None, since: datetime
    ) -> Iterator[_Page]:
        state = dict(state or {})
        link = state.get("next_link") or state.get("delta_link")
        if not isinstance(link, str):
            link = self._first_round(folder_id, since)
        try:
            yield from self._rounds(link, state)
        except _DeltaExpiredError:
            synced = state.get("synced_at")
            window = datetime.fromisoformat(synced) if isinstance(synced, str) else since
            start = window - REBUILD_WINDOW
            log.warning(
                "graph_delta_expired mailbox=%s relisting_from=%s", self.email, start.isoformat()
            )
            first = self._first_round(folder_id, start)
            yield from self._rounds(first, {"synced_at": window.isoformat()})

    def _rounds(self, link: str, state: dict[str, Any]) -> Iterator[_Page]:
        synced_at = state.get("synced_at") or datetime.now(UTC).isoformat()
        while True:
            response = self.request(
                "GET",
                link,
                "reading changes",
                expect=(200, 404),
                headers={"Prefer": f"odata.maxpagesize={PAGE_SIZE}"},
            )
            if response.status_code == 404:
                raise FolderGoneError
            page = response.json()
            summaries = [_summary(row) for row in page.get("value") or [] if "@removed" not in row]
            next_link = page.get("@odata.nextLink")
            if isinstance(next_link, str):
                yield summaries, {"next_link": next_link, "synced_at": synced_at}
                link = next_link
                continue
            delta_link = page.get("@odata.deltaLink")
            if not isinstance(delta_link, str):
                raise ProviderError("Microsoft Graph ended a delta round without a deltaLink")
            yield summaries, {"delta_link": delta_link, "synced_at": datetime.now(UTC).isoformat()}
            return

    def fetch(self, fetch_ref: str, max_bytes: int) -> bytes:
        item_id, _, message_id = fetch_ref.partition("|")
        try:
            return self._value(item_id, max_bytes)
        except ProviderError as exc:
            if not exc.permanent or exc.needs_reconnect or not message_id:
                raise
            # Moved since it was listed: it has a new id now.
            moved = self._by_message_id(message_id, None, "id")
            if not moved:
                raise
            return self._value(str(moved[0]["id"]), max_bytes)

    def _value(self, item_id: str, max_bytes: int) -> bytes:
        response = self.request(
            "GET",
            f"/me/messages/{quote(item_id, safe='')}/$value",
            "fetching a message",
            stream=True,
        )
        data = bytearray()
        for chunk in response.iter_content(65536):
            data.extend(chunk)
            if len(data) >= max_bytes:
                break
        response.close()
        return bytes(data[:max_bytes])

    # -- change notifications --------------------------------------------------------------

    def subscribe(self, notification_url: str, client_state: str) -> tuple[str, datetime]:
        """A `created` subscription on every message; Graph validates `notification_url` first."""
        expires = datetime.now(UTC) + SUBSCRIPTION_LIFETIME
        body = {
            "changeType": "created",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": notification_url,
            "resource": SUBSCRIPTION_RESOURCE,
            "expirationDateTime": expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "clientState": client_state,
        }
        answer = self.request(
            "POST", "/subscriptions", "subscribing to new mail", expect=(201,), json=body
        ).json()
        return str(answer["id"]), _parse_time(answer.get("expirationDateTime"), expires)

    def renew(self, subscription_id: str) -> datetime:
        expires = datetime.now(UTC) + SUBSCRIPTION_LIFETIME
        answer = self.request(
            "PATCH",
            f"/subscriptions/{quote(subscription_id, safe='')}",
            "renewing the subscription",
            json={"expirationDateTime": expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z")},
        ).json()
        if str(answer.get("resource") or "").lower() in INBOX_ONLY_RESOURCES:
            # Made when Inbox alone was watched; PATCH cannot change a resource.
            self.unsubscribe(subscription_id)
            raise ProviderError("the subscription watched Inbox only", permanent=True)
        return _parse_time(answer.get("expirationDateTime"), expires)

    def unsubscribe(self, subscription_id: str) -> None:
        try:
            self.request(
                "DELETE",
                f"/subscriptions/{quote(subscription_id, safe='')}",
                "removing the subscription",
                expect=(204, 404),
            )
        except ProviderError as exc:
            log.warning("graph_unsubscribe_failed mailbox=%s error=%s", self.email, exc)


def _parse_time(value: Any, fallback: datetime) -> datetime:
    if not isinstance(value, str):
        return fallback
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Graph gives seven fractional digits; Python takes six
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return fallback
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _summary(row: dict[str, Any]) -> HeaderSummary:
    properties = {
        str(p.get("id", "")).lower(): str(p.get("value", ""))
        for p in row.get("singleValueExtendedProperties") or []
    }
    sender = (row.get("from") or {}).get("emailAddress") or {}
    headers: dict[str, str] = {}
    message_id = str(row.get("internetMessageId") or "")
    if message_id:
        headers["message-id"] = message_id
    if sender.get("address"):
        headers["from"] = email.utils.formataddr(
            (str(sender.get("name") or ""), str(sender["address"]))
        )
    if row.get("subject") is not None:
        headers["subject"] = str(row["subject"])
    if properties.get(IN_REPLY_TO.lower()):
        headers["in-reply-to"] = properties[IN_REPLY_TO.lower()]
    if properties.get(REFERENCES.lower()):
        headers["references"] = properties[REFERENCES.lower()]
    message_class = properties.get(MESSAGE_CLASS.lower(), "")
    if message_class.upper().startswith("REPORT."):
        # NDRs and delivery reports: what the matcher knows as a report.
        headers["content-type"] = "multipart/report; report-type=delivery-status"
    elif message_class.startswith("IPM.Note.Rules.OofTemplate"):
        headers["auto-submitted"] = "auto-replied"
    received = _parse_time(row.get("receivedDateTime"), datetime.now(UTC))
    return summary_from_headers(
        headers,
        provider_id=None,
        fetch_ref=f"{row['id']}|{message_id}",
        received_at=received,
        thread_id=str(row.get("conversationId") or ""),
    )
