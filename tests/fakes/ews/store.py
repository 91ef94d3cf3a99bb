"""The fake Exchange server's state: mailboxes, folders, sync states, subscriptions, faults.

Facts modelled (EWS reference, [MS-OXWSSYNC], [MS-OXWSNTIF], shared/FIELD-NOTES.md):

- Item ids are opaque and change when an item moves (a sent draft becomes a new
  item in Sent Items); InternetMessageId and ConversationId do not.
- SyncFolderItems returns at most MaxChangesReturned (≤ 512) changes per call
  with a SyncState to resume from and IncludesLastItemInRange; a sync state
  the server no longer accepts answers ErrorInvalidSyncStateData.
- A streaming subscription collects events (NewMailEvent, CreatedEvent) for
  its folders; GetStreamingEvents holds the connection open up to
  ConnectionTimeout minutes, writing one SOAP envelope per batch of events and
  a keep-alive (ConnectionStatus OK) when idle (`tests.fakes.ews.app`).
- Throttling is a SOAP fault ErrorServerBusy carrying BackOffMilliseconds.
- Exchange may give an item its own InternetMessageId, when the draft is saved
  (`message_id_policy`, see `tests.fakes.message_ids`): Sent Items and the
  recipients then carry that id.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from functools import cached_property

from tests.fakes.message_ids import check_policy, exchange_message_id, replace_message_id

MAX_CHANGES = 512


def new_id() -> str:
    return base64.b64encode(b"\x00\x00\x00\x00" + secrets.token_bytes(66)).decode()


def new_change_key() -> str:
    return base64.b64encode(b"\x10\x00\x00\x00" + secrets.token_bytes(12)).decode()


@dataclass
class EwsItem:
    id: str
    folder: str
    raw: bytes
    internet_message_id: str
    conversation_id: str
    received: datetime
    change_key: str = field(default_factory=new_change_key)

    def header(self, name: str) -> str | None:
        value = self._headers.get(name)
        return None if value is None else str(value)

    @cached_property
    def _headers(self) -> Message:
        # Parsed once (a rendered item reads five or more headers; `raw` never changes).
        return BytesHeaderParser(policy=policy.compat32).parsebytes(self.raw)

    def sender(self) -> tuple[str, str]:
        return parseaddr(self.header("From") or "")

    def recipients(self, *headers: str) -> list[str]:
        values = [self.header(h) or "" for h in headers]
        return [a.lower() for _, a in getaddresses(values) if a]

    def item_class(self) -> str:
        content_type = (self.header("Content-Type") or "").lower()
        if "multipart/report" in content_type and "delivery-status" in content_type:
            return "REPORT.IPM.Note.NDR"
        return "IPM.Note"


@dataclass
class Change:
    seq: int
    item_id: str
    folder: str
    kind: str  # create, delete


@dataclass
class Subscription:
    id: str
    email: str
    folders: set[str]
    events: list[tuple[str, str, str, str]] = field(
        default_factory=list
    )  # (type, item, folder, watermark)
    wakeup: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class EwsMailbox:
    email: str
    password: str
    folder_ids: dict[str, str] = field(default_factory=dict)  # distinguished name -> id
    # Folders a person made ("Customers"): their key is their id (folder_ids[id] == id).
    folder_names: dict[str, str] = field(default_factory=dict)  # key -> display name
    folder_parents: dict[str, str] = field(default_factory=dict)  # key -> parent's key
    items: dict[str, EwsItem] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    seq: int = 0
    oldest_seq: int = 0
    busy_calls: int = 0
    back_off_ms: int = 1500
    # The next `fault_calls` calls answer this SOAP fault (ResponseCode, text).
    fault: tuple[str, str] | None = None
    fault_calls: int = 0
    conversations: dict[str, str] = field(default_factory=dict)
    calls: int = 0


@dataclass
class EwsFaults:
    corrupt_ids: set[str] = field(
        default_factory=set
    )  # GetItem MimeContent: ErrorMimeContentConversionFailed

    def clear(self) -> None:
        self.corrupt_ids.clear()


class EwsStore:
    FOLDERS = (
        "msgfolderroot",
        "root",
        "inbox",
        "sentitems",
        "drafts",
        "deleteditems",
        "junkemail",
        "outbox",
        "calendar",
    )

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.mailboxes: dict[str, EwsMailbox] = {}
        self.subscriptions: dict[str, Subscription] = {}
        # The same subscriptions by mailbox: a delivery looks at its mailbox's only
        # (10,000 streams in the scale bench).
        self._subscribed: dict[str, list[Subscription]] = {}
        self.bearer_tokens: dict[str, str] = {}  # OAuth access token -> mailbox
        self.faults = EwsFaults()
        self.message_id_policy = "keep"  # tests.fakes.message_ids.POLICIES
        self.on_new_mail: Callable[[EwsMailbox, EwsItem], None] | None = None

    def add_mailbox(self, email: str, password: str) -> EwsMailbox:
        email = email.lower()
        with self.lock:
            mailbox = self.mailboxes.get(email)
            if mailbox is None:
                mailbox = EwsMailbox(email=email, password=password)
                mailbox.folder_ids = {name: new_id() for name in self.FOLDERS}
                self.mailboxes[email] = mailbox
            return mailbox

    def subscribe(self, subscription: Subscription) -> None:
        with self.lock:
            self.subscriptions[subscription.id] = subscription
            self._subscribed.setdefault(subscription.email, []).append(subscription)

    def unsubscribe(self, subscription_id: str) -> Subscription | None:
        with self.lock:
            found = self.subscriptions.pop(subscription_id, None)
            if found is not None:
                self._subscribed[found.email].remove(found)
            return found

    def clear_subscriptions(self) -> None:
        with self.lock:
            self.subscriptions.clear()
            self._subscribed.clear()

    def mailbox(self, email: str) -> EwsMailbox | None:
        return self.mailboxes.get(email.lower())

    def add_folder(self, email: str, name: str, parent: str = "msgfolderroot") -> str:
        """The key of the folder called `name` under `parent` (a key), made if missing."""
        with self.lock:
            mailbox = self.mailboxes[email.lower()]
            for key, shown in mailbox.folder_names.items():
                if shown.lower() == name.lower() and mailbox.folder_parents[key] == parent:
                    return key
            key = new_id()
            mailbox.folder_ids[key] = key
            mailbox.folder_names[key] = name
            mailbox.folder_parents[key] = parent
            return key

    def folder_name(self, mailbox: EwsMailbox, folder_id: str) -> str | None:
        for name, value in mailbox.folder_ids.items():
            if value == folder_id:
                return name
        return None

    def _conversation(self, mailbox: EwsMailbox, parsed: Message) -> str:
        refs = " ".join(str(parsed.get(h) or "") for h in ("In-Reply-To", "References")).split()
        for ref in reversed(refs):
            found = mailbox.conversations.get(ref.strip().lower())
            if found:
                return found
        return base64.b64encode(b"\x00" + uuid.uuid4().bytes).decode()

    def _log(self, mailbox: EwsMailbox, item: EwsItem, kind: str) -> None:
        mailbox.seq += 1
        mailbox.changes.append(Change(mailbox.seq, item.id, item.folder, kind))

    def add_item(
        self, email: str, raw: bytes, folder: str, *, thread_with: str | None = None
    ) -> EwsItem:
        """File `raw` in `folder`. `thread_with` (a Message-ID in the mailbox): Exchange
        puts it in that one's conversation, as it does by Thread-Index or topic when a
        client dropped the References."""
        parsed = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        with self.lock:
            mailbox = self.mailboxes[email.lower()]
            internet_id = str(parsed.get("Message-ID") or "").strip()
            own = folder == "drafts" and check_policy(self.message_id_policy) == "assign"
            if not internet_id or own:
                internet_id = exchange_message_id()
                raw = replace_message_id(raw, internet_id)
            item = EwsItem(
                id=new_id(),
                folder=folder,
                raw=raw,
                internet_message_id=internet_id,
                conversation_id=(
                    mailbox.conversations.get(thread_with.lower()) if thread_with else None
                )
                or self._conversation(mailbox, parsed),
                received=datetime.now(UTC),
            )
            mailbox.items[item.id] = item
            mailbox.conversations.setdefault(internet_id.lower(), item.conversation_id)
            self._log(mailbox, item, "create")
            self._event(mailbox, item)
            callback = self.on_new_mail if folder == "inbox" else None
        if callback is not None:
            callback(mailbox, item)
        return item

    def move(self, email: str, item_id: str, folder: str) -> EwsItem:
        with self.lock:
            mailbox = self.mailboxes[email.lower()]
            item = mailbox.items.pop(item_id)
            self._log(mailbox, item, "delete")
            item.id = new_id()
            item.folder = folder
            item.change_key = new_change_key()
            mailbox.items[item.id] = item
            self._log(mailbox, item, "create")
            self._event(mailbox, item)
        return item

    def send(self, email: str, item_id: str) -> EwsItem:
        sent = self.move(email, item_id, "sentitems")
        for recipient in dict.fromkeys(sent.recipients("To", "Cc", "Bcc")):
            if recipient in self.mailboxes and recipient != email.lower():
                self.add_item(recipient, sent.raw, "inbox")
        return sent

    def _event(self, mailbox: EwsMailbox, item: EwsItem) -> None:
        for subscription in list(self._subscribed.get(mailbox.email, ())):
            if item.folder not in subscription.folders:
                continue
            watermark = base64.b64encode(json.dumps({"s": mailbox.seq}).encode()).decode()
            with subscription.wakeup:
                if item.folder == "inbox":
                    subscription.events.append(("NewMailEvent", item.id, item.folder, watermark))
                subscription.events.append(("CreatedEvent", item.id, item.folder, watermark))
                subscription.wakeup.notify_all()

    def sync_state(self, email: str, folder: str) -> str:
        """What SyncFolderItems answers once a client has read everything in `folder`."""
        with self.lock:
            mailbox = self.mailboxes[email.lower()]
            return base64.b64encode(json.dumps({"f": folder, "s": mailbox.seq}).encode()).decode()

    def invalidate_sync_states(self, email: str) -> None:
        with self.lock:
            mailbox = self.mailboxes[email.lower()]
            mailbox.oldest_seq = mailbox.seq + 1
