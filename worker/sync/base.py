"""The contract every mailbox provider implements: IMAP, Gmail, Exchange (EWS), Microsoft Graph.

A provider is a thin adapter over one vendor SDK. It knows how to send a message
and how to list what changed in the mailbox since a cursor. It knows nothing of
sequences, events or Salesforce: `worker.sync.engine` drives it.

Sync contract::

    cursor (dict | None) ──changes()──▶ ChangeBatch, ChangeBatch, …
                                          │ messages: header summaries only
                                          │ cursor:   where to resume after this batch
                                          ▼
                           engine looks up candidates in one query;
                           fetch(provider_id) only for a match or a likely report;
                           the batch's cursor is saved after its messages are handled.

- `changes(None)` starts from the mailbox's connection time, never from the dawn
  of the mailbox: nothing older can answer a message we sent.
- When the provider's cursor is no longer valid (IMAP UIDVALIDITY changed, Gmail
  historyId expired), the provider itself re-lists a bounded recent window. The
  engine's idempotent writes make re-seeing a message harmless.
- A batch's messages are in the provider's order; the engine saves a batch's cursor
  only after handling every message in it, so a crash re-lists, never skips.

- `provider_id` is stable across cursor resets: the RFC Message-ID (IMAP, EWS,
  Graph, whose item ids change when a message moves) or the Gmail message id.

Errors: a provider raises `ProviderError` only, saying whether retrying can help
(`permanent`), whether a person must reconnect the mailbox (`needs_reconnect`),
and how long the provider asked us to wait (`retry_after`: Gmail quota, Graph
429 Retry-After, EWS ErrorServerBusy BackOffMilliseconds); the engine backs off
that one mailbox, never the others.

Tokens: OAuth providers (Gmail, Graph) refresh their own access tokens and hand
the new credentials to `save_credentials` at once (Microsoft rotates refresh
tokens: a token left unsaved may be the only valid one).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

# How often a held push connection says it still holds (`MailboxProvider.push_alive`).
PUSH_ALIVE_SECONDS = 30


class ProviderError(Exception):
    """A provider call failed.

    Args:
        message: what went wrong, safe to show a user (never a secret).
        permanent: retrying the same call cannot help.
        needs_reconnect: the credentials were refused or revoked.
        retry_after: seconds the provider asked us to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        needs_reconnect: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent or needs_reconnect
        self.needs_reconnect = needs_reconnect
        self.retry_after = retry_after


@dataclass(frozen=True)
class Attachment:
    """A file sent as an ordinary MIME attachment (never tracked)."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class OutgoingMessage:
    from_addr: str
    to: list[str]
    subject: str
    html: str
    text: str
    message_id: str  # canonical, chosen by us before the send is handed over
    from_name: str | None = None
    cc: list[str] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    thread_id: str | None = None  # the provider's thread, for in-thread steps
    extra_headers: dict[str, str] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)


@dataclass(frozen=True)
class SendResult:
    message_id: str  # the Message-ID the provider actually stored, canonical
    provider_message_id: str | None = None
    thread_id: str | None = None
    # The message went out, but our copy could not be filed where the user sees
    # sent mail (IMAP's Sent folder): why, for the mailbox page. None: filed, or n/a.
    sent_copy_error: str | None = None


@dataclass(frozen=True)
class HeaderSummary:
    """What a provider can tell about a message from its headers alone."""

    provider_id: str  # stable across cursor resets (e.g. the RFC Message-ID for IMAP)
    fetch_ref: str  # how `fetch()` finds it now (e.g. folder + UID)
    rfc_message_id: str | None
    from_addr: str | None
    subject: str | None
    candidates: list[str]  # In-Reply-To first, then References newest first
    headers: dict[str, str]  # the few raw headers fetched, lower-cased names
    size: int | None = None
    received_at: datetime | None = None
    # The provider's thread (Gmail threadId, Graph/EWS conversation id); None on IMAP.
    thread_id: str | None = None
    # Found in the mailbox's Sent folder: never a reply; read only for our tokens
    # (mail sent from Gmail or Outlook with an add-on's link: worker.sync.sent_mail).
    in_sent: bool = False


@dataclass(frozen=True)
class SentCopy:
    """What is read of a message in Sent: a few headers and its text parts, bounded."""

    message_id: str | None  # canonical
    subject: str
    to: list[str]
    cc: list[str]
    text: str = field(repr=False)  # the text parts, decoded and joined
    sent_at: datetime | None = None
    thread_id: str | None = None


@dataclass(frozen=True)
class ChangeBatch:
    messages: list[HeaderSummary]
    cursor: dict[str, Any]


class MailboxProvider(ABC):
    """One connected mailbox. Instances are short-lived: one per job."""

    kind: ClassVar[str]
    #: Called with the whole credentials JSON as soon as the provider refreshed or
    #: was handed new tokens (`worker.sync.credentials.credential_saver`). None:
    #: nothing is saved (e.g. the one-off check when a mailbox is connected).
    save_credentials: Callable[[dict[str, Any]], None] | None = None
    #: Set by the `listener`: `watch()` calls it once the server confirmed its push
    #: connection (IMAP IDLE's continuation) and at least every PUSH_ALIVE_SECONDS
    #: while it holds (an EWS stream: on each frame Exchange writes, keep-alives
    #: included). A provider that never calls it never counts as a live push
    #: (worker.sequences.freshness syncs such a mailbox before a follow-up step).
    push_alive: Callable[[], None] | None = None
    #: Set by the `listener` for a watch held on a thread of its own: `watch()` calls
    #: it once its push connection is set up (EWS: the GetStreamingEvents answer has
    #: begun), so the listener can let the next watch set up (`STREAM_SETUPS_AT_ONCE`).
    push_open: Callable[[], None] | None = None

    @abstractmethod
    def __init__(self, email_address: str, credentials: dict[str, Any]) -> None:
        """Credentials are the decrypted JSON stored with the mailbox."""

    @abstractmethod
    def verify(self) -> None:
        """Check the credentials work for both reading and sending. Raises ProviderError."""

    @abstractmethod
    def send(self, message: OutgoingMessage) -> SendResult:
        """Send, then return the ids the provider actually used."""

    @abstractmethod
    def find_sent(self, message_id: str) -> SendResult | None:
        """The sent copy of `message_id`, if the provider has one (crash recovery)."""

    @abstractmethod
    def changes(self, cursor: dict[str, Any] | None, since: datetime) -> Iterator[ChangeBatch]:
        """New messages after `cursor` (or received since `since` when there is none)."""

    @abstractmethod
    def fetch(self, fetch_ref: str, max_bytes: int) -> bytes:
        """The whole message, or its first `max_bytes` when larger."""

    def read_sent(self, fetch_ref: str) -> SentCopy | None:
        """A message of the Sent folder read in one call, when the provider can hand its
        text parts over decoded (Gmail); None: the engine reads `fetch()`'s first bytes."""
        return None

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        """Hold a push connection (IMAP IDLE, EWS streaming) for the `listener` until `stop`.

        Calls `on_change` when new mail may have arrived; raises ProviderError
        when the connection fails (the listener reconnects with back-off).
        Providers whose push goes to `web` instead (Gmail, Graph) do not override it.
        """
        raise ProviderError(
            f"{self.kind} mailboxes are not watched by the listener", permanent=True
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> MailboxProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
