"""The fake Microsoft 365 tenant: users, mail folders, delta state, tokens, subscriptions.

Facts modelled (Microsoft Graph v1.0 and Microsoft identity platform docs):

- A message's `id` changes when it moves between folders (a draft that is
  sent becomes a new item in Sent Items); `internetMessageId` and
  `conversationId` do not.
- Delta on a folder: a first round lists what is in the folder (optionally
  `receivedDateTime ge` a time) page by page, ending in a deltaLink whose
  token remembers where the folder's change log stood; later rounds return
  what was added since, and `@removed` rows for what left. A token the
  service no longer keeps answers 410 Gone.
- Access tokens last about an hour; refresh tokens rotate on use (with
  `strict_rotation` the previous one stops working at once, the strictest
  reading), revoked grants answer `invalid_grant` (AADSTS50173/AADSTS700082).
- Throttling answers 429 with `Retry-After` (seconds).
- A mailbox over Exchange Online's recipient rate limit (10,000 a day) still has
  `send` answered 202 and the message filed in Sent Items; what tells is the
  non-delivery report Exchange puts in its Inbox: Status 5.2.2, "554 5.2.2
  STOREDRV.Submission.Exception:SubmissionQuotaExceededException" (modelled with
  `over_submission_quota`; the recipients get nothing).
- Change-notification subscriptions on messages live at most 10,080 minutes.
- Exchange Online may give a message its own `internetMessageId`, when the draft
  is created (`message_id_policy`, see `tests.fakes.message_ids`): Sent Items
  and the recipients then carry that id.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from functools import cached_property
from typing import Any

from tests.fakes.message_ids import check_policy, outlook_message_id, replace_message_id

MAX_SUBSCRIPTION_MINUTES = 10_080
ACCESS_TOKEN_SECONDS = 3600


class GraphError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": str(uuid.uuid4()),
                    "client-request-id": str(uuid.uuid4()),
                },
            }
        }


def item_id() -> str:
    return "AAMkAGI2" + base64.urlsafe_b64encode(secrets.token_bytes(105)).decode()


def conversation_id() -> str:
    return "AAQkAGI2" + base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()


@dataclass
class GraphMessage:
    id: str
    folder: str  # a well-known name (inbox, sentitems, drafts), else the folder's id
    raw: bytes
    internet_message_id: str
    conversation_id: str
    received: datetime
    change_key: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def header(self, name: str) -> str | None:
        value = self._headers.get(name)
        return None if value is None else str(value)

    @cached_property
    def _headers(self) -> Message:
        # Parsed once (a rendered message reads five or more headers; `raw` never changes).
        return BytesHeaderParser(policy=policy.compat32).parsebytes(self.raw)

    def sender(self) -> tuple[str, str]:
        name, address = parseaddr(self.header("From") or "")
        return name, address

    def recipients(self, *headers: str) -> list[str]:
        values = [self.header(h) or "" for h in headers]
        return [a.lower() for _, a in getaddresses(values) if a]


@dataclass
class Change:
    seq: int
    message_id: str
    folder: str
    removed: bool = False


@dataclass
class GraphUser:
    email: str
    oid: str
    messages: dict[str, GraphMessage] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    seq: int = 0
    oldest_seq: int = 0  # delta tokens older than this answer 410
    throttle_calls: int = 0
    retry_after: int = 3
    conversations: dict[str, str] = field(default_factory=dict)  # internet id -> conversation
    calls: int = 0
    over_submission_quota: bool = False  # sends answer 202, then an NDR arrives


@dataclass
class RefreshToken:
    email: str
    client_id: str
    scopes: list[str]
    revoked: bool = False
    used: bool = False


@dataclass
class AccessToken:
    email: str
    expires_at: float
    revoked: bool = False


@dataclass
class AuthCode:
    email: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    challenge: str | None
    method: str | None
    nonce: str | None


@dataclass
class Subscription:
    id: str
    email: str
    resource: str
    change_type: str
    notification_url: str
    client_state: str | None
    expiration: datetime
    lifecycle_url: str | None = None


class Subscriptions(dict[str, Subscription]):
    """Subscriptions by id, also indexed by mailbox: a new message looks its own up,
    not all 10,000 of a scale bench's. Tests add and drop entries as in any dict."""

    def __init__(self) -> None:
        super().__init__()
        self._by_email: dict[str, dict[str, Subscription]] = {}

    def __setitem__(self, key: str, value: Subscription) -> None:
        self.pop(key, None)
        super().__setitem__(key, value)
        self._by_email.setdefault(value.email, {})[key] = value

    def __delitem__(self, key: str) -> None:
        self.pop(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self._by_email.get(super().__getitem__(key).email, {}).pop(key, None)
        return super().pop(key, *default)

    def clear(self) -> None:
        super().clear()
        self._by_email.clear()

    def of(self, email: str) -> list[Subscription]:
        return list(self._by_email.get(email.lower(), {}).values())


class GraphStore:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tenant_id = str(uuid.uuid4())
        self.users: dict[str, GraphUser] = {}
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.clients: dict[str, str] = {}
        self.subscriptions = Subscriptions()
        self.strict_rotation = True
        self.consenting_user: str | None = None
        self.corrupt_ids: set[str] = set()  # $value answers 500 ErrorMimeContentConversionFailed
        self.message_id_policy = "keep"  # tests.fakes.message_ids.POLICIES
        self.on_new_message: Callable[[GraphUser, GraphMessage], None] | None = None

    # -- users and mail ----------------------------------------------------------------

    def add_user(self, email: str) -> GraphUser:
        email = email.lower()
        with self.lock:
            user = self.users.get(email)
            if user is None:
                user = GraphUser(email=email, oid=str(uuid.uuid4()))
                self.users[email] = user
            return user

    def user(self, email: str) -> GraphUser:
        user = self.users.get(email.lower())
        if user is None:
            raise GraphError(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        return user

    def _record(self, user: GraphUser, message: GraphMessage, removed: bool = False) -> None:
        user.seq += 1
        user.changes.append(Change(user.seq, message.id, message.folder, removed))

    def _conversation(self, user: GraphUser, parsed: Message) -> str:
        refs = " ".join(str(parsed.get(h) or "") for h in ("In-Reply-To", "References")).split()
        for ref in reversed(refs):
            found = user.conversations.get(ref.strip().lower())
            if found:
                return found
        return conversation_id()

    def add_message(
        self, email: str, raw: bytes, folder: str, *, thread_with: str | None = None
    ) -> GraphMessage:
        """File `raw` in `folder`. `thread_with` (a Message-ID in the mailbox): Exchange
        puts it in that one's conversation, as it does by Thread-Index or topic when a
        client dropped the References."""
        parsed = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        with self.lock:
            user = self.user(email)
            internet_id = str(parsed.get("Message-ID") or "").strip()
            own = folder == "drafts" and check_policy(self.message_id_policy) == "assign"
            if not internet_id or own:
                internet_id = outlook_message_id()
                raw = replace_message_id(raw, internet_id)
            message = GraphMessage(
                id=item_id(),
                folder=folder,
                raw=raw,
                internet_message_id=internet_id,
                conversation_id=(
                    user.conversations.get(thread_with.lower()) if thread_with else None
                )
                or self._conversation(user, parsed),
                received=datetime.now(UTC),
            )
            user.messages[message.id] = message
            user.conversations.setdefault(internet_id.lower(), message.conversation_id)
            self._record(user, message)
            callback = self.on_new_message
        if callback is not None:
            callback(user, message)
        return message

    def deliver(self, email: str, raw: bytes) -> GraphMessage:
        return self.add_message(email, raw, "inbox")

    def move(self, email: str, message_id: str, folder: str) -> GraphMessage:
        """Move a message: it gets a new id, as Exchange gives it."""
        with self.lock:
            user = self.user(email)
            message = user.messages.pop(message_id)
            self._record(user, message, removed=True)
            message.id = item_id()
            message.folder = folder
            user.messages[message.id] = message
            self._record(user, message)
            callback = self.on_new_message
        if callback is not None:
            callback(user, message)
        return message

    def send_draft(self, email: str, draft_id: str) -> GraphMessage:
        with self.lock:
            user = self.user(email)
            draft = user.messages.get(draft_id)
            if draft is None or draft.folder != "drafts":
                raise GraphError(
                    404, "ErrorItemNotFound", "The specified object was not found in the store."
                )
        sent = self.move(email, draft_id, "sentitems")
        if user.over_submission_quota:
            for recipient in dict.fromkeys(sent.recipients("To", "Cc", "Bcc")):
                self.deliver(email, submission_quota_ndr(email, recipient, sent.raw))
            return sent
        for recipient in dict.fromkeys(sent.recipients("To", "Cc", "Bcc")):
            if recipient in self.users and recipient != email.lower():
                self.deliver(recipient, sent.raw)
        return sent

    def expire_delta(self, email: str) -> None:
        with self.lock:
            user = self.user(email)
            user.oldest_seq = user.seq + 1

    # -- tokens ------------------------------------------------------------------------

    def issue_tokens(self, email: str, client_id: str, scopes: list[str]) -> tuple[str, str]:
        access = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(60)
        refresh = "0.AX" + secrets.token_urlsafe(90)
        with self.lock:
            self.access_tokens[access] = AccessToken(
                email.lower(), time.time() + ACCESS_TOKEN_SECONDS
            )
            self.refresh_tokens[refresh] = RefreshToken(email.lower(), client_id, scopes)
        return access, refresh

    def authenticate(self, header: str | None) -> GraphUser:
        if not header or not header.lower().startswith("bearer "):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        token = self.access_tokens.get(header[7:].strip())
        if token is None or token.revoked:
            raise GraphError(401, "InvalidAuthenticationToken", "IDX14100: JWT is not well formed.")
        if token.expires_at <= time.time():
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        return self.user(token.email)

    def revoke_user(self, email: str) -> None:
        email = email.lower()
        with self.lock:
            for token in self.refresh_tokens.values():
                if token.email == email:
                    token.revoked = True
            for access in self.access_tokens.values():
                if access.email == email:
                    access.revoked = True

    def expire_access_tokens(self, email: str | None = None) -> None:
        with self.lock:
            for access in self.access_tokens.values():
                if email is None or access.email == email.lower():
                    access.expires_at = 0


def client_info(user: GraphUser, tenant_id: str) -> str:
    raw = json.dumps({"uid": user.oid, "utid": tenant_id}).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def submission_quota_ndr(sender: str, recipient: str, original: bytes) -> bytes:
    """Exchange Online's non-delivery report for a sender over its sending quota."""
    boundary = "B_" + secrets.token_hex(8)
    domain = sender.rpartition("@")[2]
    headers = original.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("utf-8", "replace")
    subject = BytesHeaderParser(policy=policy.compat32).parsebytes(original).get("Subject", "")
    diagnostic = (
        "554 5.2.2 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
        "process message due to a permanent exception with message [BeginDiagnosticData]"
        "Cannot submit message. SubmissionQuotaExceededException: The message can't be "
        "submitted because the sender's submission quota was exceeded.[EndDiagnosticData]"
    )
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    text = f"""From: Microsoft Outlook <postmaster@{domain}>
To: <{sender}>
Date: {now}
Subject: Undeliverable: {subject}
Message-ID: <{uuid.uuid4()}@{domain}>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset="us-ascii"

Your message to {recipient} couldn't be delivered.
{sender} has exceeded the number of messages it can send in a day.

Remote Server returned '{diagnostic}'

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;AM0PR01MB1234.eurprd01.prod.exchangelabs.com
Arrival-Date: {now}

Final-Recipient: rfc822;{recipient}
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp;{diagnostic}

--{boundary}
Content-Type: text/rfc822-headers

{headers}

--{boundary}--
"""
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
