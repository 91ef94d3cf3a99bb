"""The fake Gmail's state: mailboxes, history, OAuth clients and tokens, quota, faults.

Facts modelled (Gmail API reference, shared/FIELD-NOTES.md):

- Every change to a mailbox moves its `historyId` on; `history.list(startHistoryId)`
  returns the records after it, and a start older than the mailbox keeps answers
  404 (the caller must do a full sync).
- Message ids are 16 hex digits and never change; a thread groups a message with
  the one it answers (`In-Reply-To`/`References`).
- Quota: 15,000 units per user per minute (`userRateLimitExceeded`, 429, "Retry
  after <time>"); each call in a batch is charged on its own. Units per method
  from Google's quota table.
- Tokens: access tokens last an hour; a refresh token works until it is revoked
  (`invalid_grant`); an expired or revoked access token answers 401.
- On send, Gmail keeps a well-formed Message-ID it is given (or, with
  `message_id_policy="replace"`, replaces it with its own) and files the message
  under SENT in the sender's mailbox; recipients that are mailboxes of this fake
  receive it in INBOX.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

QUOTA_UNITS: dict[str, int] = {
    "users.getProfile": 1,
    "users.watch": 100,
    "users.stop": 50,
    "users.history.list": 2,
    "users.messages.get": 5,
    "users.messages.list": 5,
    "users.messages.send": 100,
    "users.messages.insert": 25,
    "users.threads.get": 10,
}
USER_UNITS_PER_MINUTE = 15_000
ACCESS_TOKEN_SECONDS = 3600
WATCH_SECONDS = 7 * 24 * 3600

_MSGID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")


class GmailApiError(Exception):
    """An error answered in Google's JSON error format."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str,
        status: str,
        *,
        domain: str = "global",
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.status = status
        self.domain = domain
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        item = {"message": self.message, "domain": self.domain, "reason": self.reason, **self.extra}
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [item],
                "status": self.status,
            }
        }


def not_found() -> GmailApiError:
    return GmailApiError(404, "Requested entity was not found.", "notFound", "NOT_FOUND")


def unauthenticated() -> GmailApiError:
    return GmailApiError(
        401,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
        "authError",
        "UNAUTHENTICATED",
        extra={"location": "Authorization", "locationType": "header"},
    )


def bad_request(message: str, reason: str = "invalidArgument") -> GmailApiError:
    return GmailApiError(400, message, reason, "INVALID_ARGUMENT")


def rate_limited(
    retry_at: float, code: int = 429, reason: str = "rateLimitExceeded"
) -> GmailApiError:
    """Gmail's "slow down": 429 rateLimitExceeded, or the older 403 userRateLimitExceeded."""
    stamp = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(retry_at))
        + f".{int(retry_at % 1 * 1000):03d}Z"
    )
    return GmailApiError(
        code,
        f"User-rate limit exceeded.  Retry after {stamp}",
        reason,
        "RESOURCE_EXHAUSTED" if code == 429 else "PERMISSION_DENIED",
        domain="usageLimits",
    )


@functools.lru_cache(maxsize=4096)
def parse_headers(raw: bytes) -> list[tuple[str, str]]:
    """The header fields of `raw`, parsed once (bulk mail repeats the same bytes)."""
    head = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    parsed = BytesHeaderParser(policy=policy.compat32).parsebytes(head + b"\r\n\r\n")
    return [(k, str(v)) for k, v in parsed.items()]


def _header(raw: bytes, name: str) -> str | None:
    lowered = name.lower()
    for key, value in parse_headers(raw):
        if key.lower() == lowered:
            return value
    return None


@dataclass
class StoredMessage:
    id: str
    thread_id: str
    raw: bytes
    labels: list[str]
    internal_date_ms: int
    history_id: int

    def headers(self) -> list[tuple[str, str]]:
        return parse_headers(self.raw)

    def header(self, name: str) -> str | None:
        for key, value in self.headers():
            if key.lower() == name.lower():
                return value
        return None

    def snippet(self) -> str:
        _, _, body = self.raw.partition(b"\r\n\r\n")
        if not body:
            _, _, body = self.raw.partition(b"\n\n")
        text = re.sub(rb"\s+", b" ", body[:400]).decode("utf-8", "replace").strip()
        return text[:120]


@dataclass
class HistoryRecord:
    id: int
    added: list[StoredMessage]
    labels_at_add: dict[str, list[str]]


@dataclass
class Watch:
    topic: str
    label_ids: list[str]
    behavior: str
    expiration_ms: int


@dataclass
class GmailUser:
    email: str
    history_id: int
    messages: dict[str, StoredMessage] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    oldest_history_id: int = 0  # a start before this answers 404
    watch: Watch | None = None
    quota: deque[tuple[float, int]] = field(default_factory=deque)
    units_used: int = 0
    threads: dict[str, str] = field(default_factory=dict)  # rfc Message-ID -> thread id


@dataclass
class Token:
    email: str
    client_id: str
    scopes: list[str]
    expires_at: float = 0.0
    revoked: bool = False


@dataclass
class AuthCode:
    email: str
    client_id: str
    redirect_uri: str
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str | None


@dataclass
class GmailFaults:
    """Steering for tests: each counter is consumed by the API calls it applies to."""

    rate_limit_calls: dict[str, int] = field(default_factory=dict)  # email -> next N calls 429
    # email -> (status, reason) those calls answer, when not 429 rateLimitExceeded
    rate_limit_answer: dict[str, tuple[int, str]] = field(default_factory=dict)
    server_error_calls: dict[str, int] = field(default_factory=dict)  # email -> next N calls 503
    fail_message_ids: set[str] = field(default_factory=set)  # messages.get answers 500 for these
    corrupt_message_ids: set[str] = field(default_factory=set)  # format=raw answers 400
    push_failures: int = 0  # next N push deliveries fail (the endpoint is not called)

    def clear(self) -> None:
        self.rate_limit_calls.clear()
        self.rate_limit_answer.clear()
        self.server_error_calls.clear()
        self.fail_message_ids.clear()
        self.corrupt_message_ids.clear()
        self.push_failures = 0


class GmailStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.users: dict[str, GmailUser] = {}
        self.access_tokens: dict[str, Token] = {}
        # Gmail add-on message tokens (X-Goog-Gmail-Access-Token): token -> (user, message id)
        self.message_tokens: dict[str, tuple[str, str]] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.codes: dict[str, AuthCode] = {}
        self.clients: dict[str, str] = {}  # client_id -> secret
        self.topics: set[str] = set()
        self.faults = GmailFaults()
        self.message_id_policy = "keep"
        self.consenting_user: str | None = None  # who signs in at the consent screen
        self.on_change: Callable[[GmailUser, HistoryRecord], None] | None = None
        self._next_history = 4_100_000 + secrets.randbelow(100_000)

    # -- users and mail ----------------------------------------------------------------

    def add_user(self, email: str) -> GmailUser:
        email = email.lower()
        with self.lock:
            user = self.users.get(email)
            if user is None:
                self._next_history += 1000
                user = GmailUser(email=email, history_id=self._next_history)
                user.oldest_history_id = user.history_id
                self.users[email] = user
            return user

    def user(self, email: str) -> GmailUser:
        user = self.users.get(email.lower())
        if user is None:
            raise not_found()
        return user

    def _new_message_id(self, user: GmailUser) -> str:
        while True:
            candidate = f"{(int(self.clock() * 1000) << 20 | secrets.randbelow(1 << 20)):016x}"[
                -16:
            ]
            if candidate not in user.messages:
                return candidate

    def _thread_for(self, user: GmailUser, raw: bytes, message_id: str) -> str:
        refs = _MSGID.findall(
            " ".join(_header(raw, h) or "" for h in ("In-Reply-To", "References"))
        )
        for ref in reversed(refs):
            thread = user.threads.get(ref.lower())
            if thread is not None:
                return thread
        return message_id

    def add_message(
        self, email: str, raw: bytes, labels: list[str], *, thread_with: str | None = None
    ) -> StoredMessage:
        """File `raw` in `email`'s mailbox with `labels`: one history record.

        `thread_with` (a Message-ID in the mailbox): Gmail threads the message with
        that one, as it does by subject when a client dropped the References.
        """
        with self.lock:
            user = self.user(email)
            message_id = self._new_message_id(user)
            thread_id = (
                user.threads.get(thread_with.lower()) if thread_with else None
            ) or self._thread_for(user, raw, message_id)
            user.history_id += 1 + secrets.randbelow(3)
            stored = StoredMessage(
                id=message_id,
                thread_id=thread_id,
                raw=raw,
                labels=list(labels),
                internal_date_ms=int(self.clock() * 1000),
                history_id=user.history_id,
            )
            user.messages[message_id] = stored
            own_id = stored.header("Message-ID")
            for found in _MSGID.findall(own_id or ""):
                user.threads.setdefault(found.lower(), thread_id)
            record = HistoryRecord(
                id=user.history_id, added=[stored], labels_at_add={message_id: list(labels)}
            )
            user.history.append(record)
            callback = self.on_change
        if callback is not None:
            callback(user, record)
        return stored

    def deliver(self, email: str, raw: bytes) -> StoredMessage:
        return self.add_message(email, raw, ["INBOX", "UNREAD", "CATEGORY_PERSONAL"])

    def send(self, email: str, raw: bytes, thread_id: str | None) -> StoredMessage:
        """messages.send: keep (or replace) the Message-ID, file under SENT, deliver locally."""
        given = (_header(raw, "Message-ID") or "").strip()
        if self.message_id_policy == "replace" or not _MSGID.fullmatch(given):
            token = base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
            assigned = f"<CA+{token}@mail.gmail.com>"
            if _header(raw, "Message-ID") is not None:
                raw = re.sub(
                    rb"(?im)^Message-ID:[^\r\n]*(\r?\n[ \t][^\r\n]*)*",
                    b"Message-ID: " + assigned.encode(),
                    raw,
                    count=1,
                )
            else:
                raw = b"Message-ID: " + assigned.encode() + b"\r\n" + raw
        stored = self.add_message(email, raw, ["SENT"])
        if thread_id and thread_id in {m.thread_id for m in self.user(email).messages.values()}:
            with self.lock:
                stored.thread_id = thread_id
        recipients = [
            addr.lower()
            for _, addr in getaddresses([_header(raw, h) or "" for h in ("To", "Cc", "Bcc")])
            if addr
        ]
        delivered = re.sub(rb"(?im)^Bcc:[^\r\n]*\r?\n", b"", raw)
        for recipient in dict.fromkeys(recipients):
            if recipient in self.users and recipient != email.lower():
                self.deliver(recipient, delivered)
        return stored

    def expire_history(self, email: str) -> None:
        """Every history id handed out so far is now too old (404 on history.list)."""
        with self.lock:
            user = self.user(email)
            user.history_id += 10
            user.oldest_history_id = user.history_id
            user.history.clear()

    # -- quota -------------------------------------------------------------------------

    def charge(self, user: GmailUser, method: str) -> None:
        """Charge the call's units; raise 429 when the last minute's units would pass 15,000."""
        units = QUOTA_UNITS.get(method, 5)
        now = self.clock()
        with self.lock:
            forced = self.faults.rate_limit_calls.get(user.email, 0)
            if forced:
                self.faults.rate_limit_calls[user.email] = forced - 1
                answer = self.faults.rate_limit_answer.get(user.email, (429, "rateLimitExceeded"))
                raise rate_limited(now + 2, *answer)
            while user.quota and user.quota[0][0] <= now - 60:
                user.quota.popleft()
            used = sum(u for _, u in user.quota)
            if used + units > USER_UNITS_PER_MINUTE:
                raise rate_limited(user.quota[0][0] + 60)
            user.quota.append((now, units))
            user.units_used += units
            failing = self.faults.server_error_calls.get(user.email, 0)
            if failing:
                self.faults.server_error_calls[user.email] = failing - 1
                raise GmailApiError(
                    503, "The service is currently unavailable.", "backendError", "UNAVAILABLE"
                )

    # -- OAuth -------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str) -> None:
        self.clients[client_id] = secret

    def issue_code(
        self,
        email: str,
        client_id: str,
        redirect_uri: str,
        scopes: list[str],
        challenge: str | None,
        method: str | None,
    ) -> str:
        code = "4/0A" + secrets.token_urlsafe(30)
        self.codes[code] = AuthCode(
            email.lower(), client_id, redirect_uri, scopes, challenge, method
        )
        return code

    def issue_access_token(self, email: str, client_id: str, scopes: list[str]) -> str:
        token = "ya29.a0" + secrets.token_urlsafe(40)
        self.access_tokens[token] = Token(
            email.lower(), client_id, scopes, expires_at=self.clock() + ACCESS_TOKEN_SECONDS
        )
        return token

    def issue_message_token(self, email: str, message_id: str) -> str:
        """A Gmail add-on event's `gmail.accessToken`: opens this one message only."""
        token = "msg." + secrets.token_urlsafe(30)
        self.message_tokens[token] = (email.lower(), message_id)
        return token

    def issue_refresh_token(self, email: str, client_id: str, scopes: list[str]) -> str:
        token = "1//0g" + secrets.token_urlsafe(40)
        self.refresh_tokens[token] = Token(email.lower(), client_id, scopes)
        return token

    def authenticate(self, header: str | None) -> Token:
        if not header or not header.lower().startswith("bearer "):
            raise unauthenticated()
        token = self.access_tokens.get(header[7:].strip())
        if token is None or token.revoked or token.expires_at <= self.clock():
            raise unauthenticated()
        return token

    def revoke_user(self, email: str) -> None:
        """The user removed our access (or changed their password): every token dies."""
        email = email.lower()
        with self.lock:
            for token in [*self.access_tokens.values(), *self.refresh_tokens.values()]:
                if token.email == email:
                    token.revoked = True

    def expire_access_tokens(self, email: str | None = None) -> None:
        with self.lock:
            for token in self.access_tokens.values():
                if email is None or token.email == email.lower():
                    token.expires_at = 0

    def revoke_token(self, value: str) -> bool:
        """/revoke: revoking either token of a grant ends the whole grant."""
        token = self.access_tokens.get(value) or self.refresh_tokens.get(value)
        if token is None:
            return False
        with self.lock:
            for other in [*self.access_tokens.values(), *self.refresh_tokens.values()]:
                if other.email == token.email and other.client_id == token.client_id:
                    other.revoked = True
        return True


def pkce_ok(verifier: str | None, challenge: str | None, method: str | None) -> bool:
    if challenge is None:
        return True
    if verifier is None:
        return False
    if (method or "plain") == "S256":
        digest = hashlib.sha256(verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge
    return verifier == challenge
