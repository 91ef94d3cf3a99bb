"""Exchange on-premises mailboxes (2016, 2019, Subscription Edition) through EWS, with exchangelib.

Exchange Online closed EWS to third-party apps from 1 October 2026 (unless a
tenant admin allow-lists the app); Microsoft 365 mailboxes use
`worker.sync.graph`. This module owns everything EWS and must never touch the
database or sequences; the engine and the listener drive it.

Credentials JSON (encrypted at rest): ``{"ews_url", "auth": "ntlm" | "basic" |
"oauth", "username", "password"}`` or, for OAuth where the server supports it,
``{"ews_url", "auth": "oauth", "access_token"}``. No autodiscover: the EWS URL
is given, and the server version is pinned (Exchange 2016 schema, which 2019
and SE accept), so no request is spent guessing.

Sending is draft + send: CreateItem (SaveOnly, from our MIME: our Message-ID,
In-Reply-To and References are kept) → GetItem reads back InternetMessageId
and ConversationId → SendItem (a copy saved to Sent Items).

Sync uses SyncFolderItems on every mail folder but the skipped ones (Sent
Items, Drafts, Deleted Items, Junk Email, Outbox, Conversation History, Sync Issues; listed
by `worker.sync.exchange_folders`, the list kept in the cursor and trusted as
`folders.FolderReads` says), each with its own sync state in
``cursor["folders"][<folder id>]`` (a cursor from when Inbox alone was synced,
``{"sync_state"}`` at the top, goes on as Inbox's), one page of ≤ 512 changes at a time, IdOnly
plus DateTimeReceived; the new items' headers come from one GetItem per ≤ 100
items (InternetMessageId, InReplyTo, References, From, Subject, ItemClass) —
SyncFolderItems returns no body, and neither do we ask for one::

    no cursor ───────────▶ SyncFolderItems (no state): the folder, newest kept ─▶ {sync_state}
    {sync_state} ────────▶ SyncFolderItems(state): what changed                 ─▶ {sync_state}
      ErrorInvalidSyncStateData ─▶ a new first sync, items from <synced_at - 2 days>

Item ids change when an item moves, so the engine's `provider_id` is the
Message-ID (``mid:<id>``). Throttling (ErrorServerBusy) becomes
`ProviderError(retry_after=BackOffMilliseconds)`: exchangelib runs fail-fast,
so a throttled mailbox never holds a worker asleep; the engine backs it off.
Every failure is put in our words by `worker.sync.exchange_errors`.

A sync costs SyncFolderItems (+ GetItem for what is new) per folder, and a
FindFolder when the kept list is older than `folders.FOLDER_LIST_KEPT` or the
known folders held nothing new. `watch()` holds a streaming subscription on the
same folders for the `listener` (Subscribe + GetStreamingEvents, re-issued every
`SIGHTLINE_EXCHANGE_STREAM_MINUTES`), live while Exchange writes to it:
`worker.sync.exchange_stream`.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from exchangelib import (
    BASIC,
    DELEGATE,
    NTLM,
    OAUTH2,
    Account,
    Build,
    Configuration,
    Credentials,
    FailFast,
    Message,
    Version,
)
from exchangelib.credentials import OAuth2AuthorizationCodeCredentials
from exchangelib.errors import ErrorFolderNotFound, ErrorInvalidSyncStateData
from exchangelib.fields import FieldPath
from exchangelib.items import ID_ONLY
from exchangelib.properties import DistinguishedFolderId, FolderId
from exchangelib.properties import Mailbox as ExchangeMailbox
from exchangelib.protocol import BaseProtocol
from exchangelib.services import GetItem, SyncFolderItems
from requests import PreparedRequest, Response

from core.outbound import OutboundError, resolve_url, split_url
from core.outbound_http import PinnedHTTPAdapter
from worker.matching.msgid import normalize_msgid
from worker.sync.base import (
    ChangeBatch,
    HeaderSummary,
    MailboxProvider,
    OutgoingMessage,
    ProviderError,
    SendResult,
)
from worker.sync.exchange_errors import EWS_FAILURES, ews_call, ews_error
from worker.sync.exchange_folders import watched_folders, well_known_ids
from worker.sync.exchange_stream import hold_stream
from worker.sync.folders import FolderGoneError, FolderReads, skip_list
from worker.sync.headers import summary_from_headers
from worker.sync.mime import build_mime
from worker.sync.sent_copy import read_sent_since

log = logging.getLogger(__name__)

AUTH_TYPES = {"ntlm": NTLM, "basic": BASIC, "oauth": OAUTH2}
SERVER_VERSION = Version(build=Build(15, 1), api_version="Exchange2016")
MAX_CHANGES = 512  # the most SyncFolderItems returns per call
HEADER_FIELDS = (
    "message_id",
    "in_reply_to",
    "references",
    "author",
    "subject",
    "datetime_received",
    "size",
    "item_class",
    "conversation_id",
)
REBUILD_WINDOW = timedelta(days=2)


# Every EWS connection exchangelib opens goes through the outbound policy: the EWS
# URL is a team's, so each new connection is resolved, checked and pinned
# (core.outbound_http). exchangelib documents this class attribute as the place to
# change its transport; only EWS uses exchangelib here.
class _EwsAdapter(PinnedHTTPAdapter):
    default_purpose = "Exchange"

    def build_response(self, req: PreparedRequest, resp: Any) -> Response:
        response = super().build_response(req, resp)
        response.__class__ = _EwsResponse
        return response


class _EwsResponse(Response):
    """A response whose body, once read, is handed over whole.

    exchangelib parses every answer from `iter_content()`, whose default chunk
    is one byte: a Python call per byte, half the CPU of a sync. A body read
    already (every call but a stream) is one chunk here; a stream still comes
    as it arrives (`worker.sync.exchange_stream` reads it a chunk at a time).
    """

    def iter_content(self, chunk_size: int | None = 1, decode_unicode: bool = False) -> Any:
        body = getattr(self, "_content", None)  # requests' own: the body, once read
        read = getattr(self, "_content_consumed", False) and isinstance(body, bytes)
        if read and not decode_unicode:
            return iter((body,))
        return super().iter_content(chunk_size, decode_unicode)


BaseProtocol.HTTP_ADAPTER_CLS = _EwsAdapter


_Page = tuple[list[HeaderSummary], dict[str, Any]]  # a page's summaries, the folder's state


class _SyncStateExpiredError(Exception):
    """The server no longer accepts the stored sync state."""


def _header_fields() -> list[FieldPath]:
    return [FieldPath(field=Message.get_field_by_fieldname("datetime_received"))]


class ExchangeProvider(MailboxProvider):
    kind: ClassVar[str] = "exchange"

    def __init__(self, email_address: str, credentials: dict[str, Any]) -> None:
        self.email = email_address
        url = str(credentials.get("ews_url") or "")
        if not url.startswith(("https://", "http://")):
            raise ProviderError("Exchange mailbox has no EWS URL", permanent=True)
        try:
            split_url(url, schemes=("https", "http"))
        except OutboundError as exc:
            raise ProviderError(f"EWS URL {exc}", permanent=True) from None
        auth = str(credentials.get("auth") or "ntlm")
        if auth not in AUTH_TYPES:
            raise ProviderError(f"unknown Exchange auth {auth!r}", permanent=True)
        self._url = url
        self._auth = auth
        self._credentials = dict(credentials)
        self.skip_folders = skip_list(credentials)
        self._sent_since = read_sent_since(credentials)  # Sent read while a draft waits
        self._account: Account | None = None

    # -- connection ----------------------------------------------------------------------

    @property
    def account(self) -> Account:
        if self._account is None:
            # Checked before any request, for a clear error; the adapter checks (and
            # pins) every connection itself.
            try:
                resolve_url(self._url, purpose="Exchange", schemes=("https", "http"))
            except OutboundError as exc:
                raise ProviderError(str(exc), permanent=exc.permanent) from None
            if self._auth == "oauth":
                token = self._credentials.get("access_token")
                if not token:
                    raise ProviderError(
                        "Exchange mailbox has no access token", needs_reconnect=True
                    )
                creds: Any = OAuth2AuthorizationCodeCredentials(
                    access_token={"access_token": token, "token_type": "Bearer"}
                )
            else:
                username, password = (
                    self._credentials.get("username"),
                    self._credentials.get("password"),
                )
                if not username or not password:
                    raise ProviderError(
                        "Exchange mailbox has no username or password", needs_reconnect=True
                    )
                creds = Credentials(str(username), str(password))
            config = Configuration(
                service_endpoint=self._url,
                credentials=creds,
                auth_type=AUTH_TYPES[self._auth],
                version=SERVER_VERSION,
                retry_policy=FailFast(),
                max_connections=2,
            )
            self._account = Account(
                primary_smtp_address=self.email,
                config=config,
                autodiscover=False,
                access_type=DELEGATE,
                default_timezone=None,
            )
        return self._account

    def close(self) -> None:
        # Close the pool: NTLM authenticates a connection, and one kept open would keep
        # working after the password changed, hiding a mailbox that needs reconnecting.
        if self._account is not None:
            with contextlib.suppress(Exception):
                self._account.protocol.close()
            self._account = None

    def verify(self) -> None:
        ews_call("opening Inbox", lambda: self.account.inbox)
        ews_call("opening Drafts", lambda: self.account.drafts)

    # -- sending -------------------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> SendResult:
        raw = build_mime(message)
        account = self.account
        draft = Message(
            account=account,
            folder=ews_call("opening Drafts", lambda: account.drafts),
            mime_content=raw,
        )
        ews_call("creating the draft", draft.save)
        draft_id = str(draft.id)
        stored = self._read_ids(draft_id, str(draft.changekey))
        ews_call(
            "sending",
            lambda: draft.send(save_copy=True, copy_to_folder=account.sent),
        )
        message_id = normalize_msgid(stored.get("message_id") or "") or message.message_id
        if message_id != message.message_id:
            log.info(
                "exchange_message_id_replaced ours=%s stored=%s", message.message_id, message_id
            )
        return SendResult(
            message_id=message_id,
            provider_message_id=draft_id,
            thread_id=stored.get("conversation_id"),
        )

    def _get_items(
        self, doing: str, ids: list[tuple[str, str]], fields: tuple[str, ...]
    ) -> list[Any]:
        """GetItem with exactly `fields` (never the root-folder lookup `Account.fetch` makes)."""
        paths = [FieldPath(field=Message.get_field_by_fieldname(f)) for f in fields]
        return ews_call(
            doing,
            lambda: list(
                GetItem(account=self.account).call(
                    items=ids, additional_fields=paths, shape=ID_ONLY
                )
            ),
        )

    def _read_ids(self, item_id: str, changekey: str) -> dict[str, str | None]:
        items = self._get_items(
            "reading the draft back", [(item_id, changekey)], ("message_id", "conversation_id")
        )
        item = items[0] if items else None
        if item is None or isinstance(item, Exception):
            raise ProviderError(f"Exchange lost the draft it just saved: {item}")
        conversation = getattr(item.conversation_id, "id", None)
        return {"message_id": item.message_id, "conversation_id": conversation}

    def find_sent(self, message_id: str) -> SendResult | None:
        def search() -> list[Any]:
            sent = self.account.sent
            return list(
                sent.filter(message_id=message_id).only("message_id", "conversation_id")[:1]
            )

        found = ews_call("searching Sent Items", search)
        if not found:
            return None
        item = found[0]
        return SendResult(
            message_id=normalize_msgid(item.message_id or "") or message_id,
            provider_message_id=str(item.id),
            thread_id=getattr(item.conversation_id, "id", None),
        )

    # -- sync ----------------------------------------------------------------------------

    def changes(self, cursor: dict[str, Any] | None, since: datetime) -> Iterator[ChangeBatch]:
        state = dict(cursor or {})
        before = dict(state.get("folders") or {})
        known = dict(state.get("well_known") or {})
        if isinstance(state.get("sync_state"), str):
            # Written when Inbox alone was synced: Inbox goes on from there.
            known = well_known_ids(self.account, {"inbox"}, known) | known
            legacy = {k: state[k] for k in ("sync_state", "synced_at") if k in state}
            if known.get("inbox"):
                before.setdefault(known["inbox"], legacy)
        # Sent Items too while an add-on's draft waits (worker.sync.sent_mail).
        plan = FolderReads.start(
            state, before, known, self.skip_folders, self._list, self._sent_since
        )

        yield from plan.batches(self._folder_changes, since)

    def _list(self, known: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """(ids of the folders to sync, the distinguished ids to keep): one FindFolder."""
        folders, ids = watched_folders(self.account, self.skip_folders, known)
        return [f.id for f in folders], {**known, **ids}

    def _folder_changes(
        self, folder_id: str, state: dict[str, Any] | None, since: datetime
    ) -> Iterator[_Page]:
        folder = FolderId(id=folder_id)
        state = dict(state or {})
        sync_state = state.get("sync_state")
        if not isinstance(sync_state, str):
            yield from self._sync(folder, None, since)
            return
        try:
            yield from self._sync(folder, sync_state, None)
        except _SyncStateExpiredError:
            synced = state.get("synced_at")
            window = datetime.fromisoformat(synced) if isinstance(synced, str) else since
            log.warning(
                "exchange_sync_state_expired mailbox=%s relisting_from=%s",
                self.email,
                (window - REBUILD_WINDOW).isoformat(),
            )
            yield from self._sync(folder, None, window - REBUILD_WINDOW)

    def _inbox(self) -> DistinguishedFolderId:
        # Named, not looked up: saves the GetFolder calls (root, inbox) a lookup would cost.
        return DistinguishedFolderId(id="inbox", mailbox=ExchangeMailbox(email_address=self.email))

    def _sync(
        self, folder: FolderId, sync_state: str | None, not_before: datetime | None
    ) -> Iterator[_Page]:
        service = SyncFolderItems(account=self.account)
        while True:
            try:
                changes = list(
                    service.call(
                        folder=folder,
                        shape=ID_ONLY,
                        additional_fields=_header_fields(),
                        sync_state=sync_state,
                        ignore=None,
                        max_changes_returned=MAX_CHANGES,
                        sync_scope=None,
                    )
                )
            except ErrorInvalidSyncStateData as exc:
                raise _SyncStateExpiredError from exc
            except ErrorFolderNotFound as exc:  # deleted since it was listed
                raise FolderGoneError from exc
            except EWS_FAILURES as exc:
                raise ews_error(exc, "reading changes") from exc
            new_items = [
                item
                for change, item in changes
                if change == SyncFolderItems.CREATE
                and isinstance(item, Message)
                and (
                    not_before is None
                    or item.datetime_received is None
                    or item.datetime_received >= not_before
                )
            ]
            summaries = self._summaries([(str(i.id), str(i.changekey)) for i in new_items])
            new_state = str(service.sync_state)
            yield summaries, {"sync_state": new_state, "synced_at": datetime.now(UTC).isoformat()}
            if service.includes_last_item_in_range or new_state == sync_state:
                return
            sync_state = new_state

    def _summaries(self, ids: list[tuple[str, str]]) -> list[HeaderSummary]:
        if not ids:
            return []
        fetched = self._get_items("reading headers", ids, HEADER_FIELDS)
        summaries = []
        for item in fetched:
            if isinstance(item, Exception) or not isinstance(item, Message):
                continue  # deleted since it was listed
            summaries.append(_summary(item))
        return summaries

    def fetch(self, fetch_ref: str, max_bytes: int) -> bytes:
        item_id, changekey, message_id = [*fetch_ref.split("|", 2), "", ""][:3]
        item = self._fetch_mime(item_id, changekey)
        if isinstance(item, Exception) and message_id:
            moved = ews_call(
                "looking a moved message up",
                lambda: list(
                    self.account.inbox.filter(message_id=message_id).only("message_id")[:1]
                ),
            )
            if moved:
                item = self._fetch_mime(str(moved[0].id), str(moved[0].changekey))
        if isinstance(item, Exception):
            raise ProviderError(f"Exchange cannot hand the message over: {item}", permanent=True)
        return bytes(item.mime_content or b"")[:max_bytes]

    def _fetch_mime(self, item_id: str, changekey: str) -> Any:
        found = ews_call(
            "fetching a message",
            lambda: list(
                self.account.fetch(ids=[(item_id, changekey)], only_fields=["mime_content"])
            ),
        )
        return found[0] if found else ProviderError("Exchange returned nothing")

    # -- streaming -----------------------------------------------------------------------

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        """Hold a streaming subscription on the synced folders until `stop`
        (worker.sync.exchange_stream). The folders are listed when it starts: one made
        later is streamed from the next reconnection, and read by every sync meanwhile."""
        folders, _ = watched_folders(self.account, self.skip_folders, {})
        ids = [FolderId(id=f.id) for f in folders] or [self._inbox()]
        hold_stream(self.account, ids, stop, on_change, self.push_alive, self.push_open)


def _summary(item: Message) -> HeaderSummary:
    headers: dict[str, str] = {}
    if item.message_id:
        headers["message-id"] = str(item.message_id)
    author = item.author
    if author is not None and author.email_address:
        headers["from"] = email.utils.formataddr(
            (str(author.name or ""), str(author.email_address))
        )
    if item.subject is not None:
        headers["subject"] = str(item.subject)
    if item.in_reply_to:
        headers["in-reply-to"] = str(item.in_reply_to)
    if item.references:
        headers["references"] = str(item.references)
    item_class = str(item.item_class or "")
    if item_class.upper().startswith("REPORT."):
        headers["content-type"] = "multipart/report; report-type=delivery-status"
    elif item_class.startswith("IPM.Note.Rules.OofTemplate"):
        headers["auto-submitted"] = "auto-replied"
    received = item.datetime_received
    return summary_from_headers(
        headers,
        provider_id=None,
        fetch_ref=f"{item.id}|{item.changekey}|{item.message_id or ''}",
        size=int(item.size) if item.size is not None else None,
        received_at=datetime.fromtimestamp(received.timestamp(), UTC) if received else None,
        thread_id=getattr(item.conversation_id, "id", None),
    )
