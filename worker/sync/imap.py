"""IMAP + SMTP mailboxes: any server, with a username and password.

Sending goes through SMTP with the Message-ID we chose, then the exact bytes are
appended to the Sent folder (worker.sync.imap_folders: `\\Sent` special-use, else
a usual name under the personal namespace, else one made there) so the user sees
what went out — unless the mailbox says its server files sent mail itself (Gmail
does; a second copy would be a duplicate). A copy that cannot be filed does not
fail the send: its reason travels back in `SendResult.sent_copy_error`.

Every folder is synced but Sent, Drafts, Trash and Junk (SIGHTLINE_SKIP_FOLDERS,
or the mailbox's own ``skip_folders``; worker.sync.imap_folders finds them by
RFC 6154 flag or name), so a reply a server rule filed in "Customers" is seen;
a mailbox may instead name its ``folders``. The folder list (one LIST) is kept
in the cursor and trusted as Graph's and EWS's are (`worker.sync.folders.FolderReads`,
FOLDER_LIST_KEPT): a sync whose folders held nothing new, or found one gone
(SELECT refused and the folder no longer there), lists again at once, so a
folder made since is read by the sync that needs it. IDLE holds INBOX only
(one connection per mailbox); the other folders are read by every sync: the
poll (SIGHTLINE_SYNC_POLL_SECONDS, a minute by default) and every sync IDLE
triggers. The cursor is ``{"shape": "folders", "folders": {name: state},
"well_known": {"sentitems": name}, "listing": ...}`` (`folder_states` also reads
the flat ``{name: state}`` cursors written before); per folder, the state is
``{"uidvalidity": V, "last_uid": U, "synced_on": date}``::

    no cursor ───────────────▶ UID SEARCH SINCE <connected on>      (first sync)
    same UIDVALIDITY ────────▶ UID SEARCH UID U+1:4294967295        (incremental)
    UIDVALIDITY changed ─────▶ UID SEARCH SINCE <synced_on - 2 days> (rebuild)

Only a handful of headers are fetched per message (`HEADER_FIELDS`); the whole
message is fetched only when the engine asks (a match, or a likely report), and
never more than the configured size. Message identity for the engine is the
RFC Message-ID (stable across a UIDVALIDITY change), else a digest of the
headers, so a rebuild re-sees messages without recording anything twice.

`watch()` holds IMAP IDLE on INBOX for the `listener` process and calls back on
new mail; it re-issues IDLE every 25 minutes (RFC 2177 lets servers drop an idle
client after 30).

imapclient and smtplib are imported here, in `imap_connect` (which opens every
connection, through the outbound policy) and in `smtp_send` (which sends) only.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlsplit

import imapclient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, ProtocolError
from imapclient.imapclient import SEEN

from config import get_settings
from worker.sync.base import (
    PUSH_ALIVE_SECONDS,
    ChangeBatch,
    HeaderSummary,
    MailboxProvider,
    OutgoingMessage,
    ProviderError,
    SendResult,
)
from worker.sync.folders import FolderGoneError, FolderReads, skip_list
from worker.sync.imap_connect import open_imap, open_smtp
from worker.sync.imap_fetch import (
    answers_request,
    find_header_block,
    find_message,
    header_fields_request,
)
from worker.sync.imap_folders import (
    SHAPE,
    FolderError,
    find_sent_folder,
    folder_states,
    watched_folders,
)
from worker.sync.imap_idle import idle_steps
from worker.sync.mime import build_mime, summarize_headers
from worker.sync.sent_copy import in_sent, read_sent_since
from worker.sync.smtp_send import send_mail
from worker.sync.watch_steps import Steps, run_blocking

log = logging.getLogger(__name__)

HEADER_FIELDS = (
    "MESSAGE-ID IN-REPLY-TO REFERENCES FROM SUBJECT DATE CONTENT-TYPE AUTO-SUBMITTED "
    "X-AUTOREPLY X-AUTORESPOND PRECEDENCE RETURN-PATH X-FAILED-RECIPIENTS"
)
HEADER_NAMES = tuple(HEADER_FIELDS.split())
# The answer is read by meaning (worker.sync.imap_fetch): servers spell the item's
# name their own way (Courier quotes the field names), never byte-equal to this.
_HEADER_ITEM = header_fields_request(HEADER_NAMES)
BATCH_SIZE = 200
MAX_UID = 4_294_967_295  # RFC 3501: a UID is a 32-bit unsigned number
REBUILD_WINDOW = timedelta(days=2)
IDLE_RENEW_SECONDS = 25 * 60
TIMEOUT_SECONDS = 60
SECURITY_MODES = ("none", "starttls", "tls")
_NO_SELECT = frozenset({b"\\noselect", b"\\nonexistent"})  # RFC 3501, RFC 5258


def _connection_settings(credentials: dict[str, Any], which: str) -> dict[str, Any]:
    settings = credentials.get(which)
    if not isinstance(settings, dict):
        raise ProviderError(f"mailbox has no {which} settings", permanent=True)
    return settings


def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class ImapProvider(MailboxProvider):
    kind: ClassVar[str] = "imap"

    def __init__(self, email_address: str, credentials: dict[str, Any]) -> None:
        self.email = email_address
        self._imap_settings = _connection_settings(credentials, "imap")
        self._smtp_settings = _connection_settings(credentials, "smtp")
        # A person's own choice of folders, else every folder but the skipped ones
        # (`_watched`). ["INBOX"] was the default before every folder was synced:
        # it is read as no choice.
        folders = credentials.get("folders")
        chosen = [str(f) for f in folders] if isinstance(folders, list) else []
        self._chosen: list[str] | None = chosen if chosen and chosen != ["INBOX"] else None
        self.skip_folders = skip_list(credentials)
        self._sent_since = read_sent_since(credentials)  # Sent listed while a draft waits
        self.append_to_sent: bool = bool(credentials.get("append_to_sent", True))
        self._sent_folder: str | None = credentials.get("sent_folder")
        self._client: imapclient.IMAPClient | None = None
        # The folder this connection has selected, and its UIDVALIDITY then.
        self._selected: tuple[str, int] | None = None
        # Message-ID of each message listed by this provider, by fetch_ref: how
        # `fetch` finds it again should the server renumber the folder meanwhile.
        self._listed_ids: dict[str, str] = {}

    # -- connections ---------------------------------------------------------

    def _imap(self) -> imapclient.IMAPClient:
        # Connected through the outbound policy every time (worker.sync.imap_connect).
        if self._client is None:
            self._client = open_imap(
                self._imap_settings, timeout=TIMEOUT_SECONDS, ssl_context=_ssl_context
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            # The connection may already be gone: closing is best effort.
            with contextlib.suppress(IMAPClientError, OSError):
                self._client.logout()
            self._client = None

    def _smtp(self) -> smtplib.SMTP:
        # The EHLO name is ours to give; without it smtplib asks DNS for an FQDN.
        helo = urlsplit(get_settings().public_base_url).hostname or "localhost"
        return open_smtp(
            self._smtp_settings, helo=helo, timeout=TIMEOUT_SECONDS, ssl_context=_ssl_context
        )

    def verify(self) -> None:
        self._imap()
        smtp = self._smtp()
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()

    # -- sending -------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> SendResult:
        raw = build_mime(message)
        send_mail(self._smtp(), message, raw)
        copy_error = self._append_sent(raw) if self.append_to_sent else None
        return SendResult(message_id=message.message_id, sent_copy_error=copy_error)

    def _sent_folder_name(self) -> str:
        """The Sent folder (worker.sync.imap_folders), looked up once per provider.

        Raises:
            ProviderError: the server would neither show nor make one.
        """
        if self._sent_folder:
            return self._sent_folder
        try:
            self._sent_folder = find_sent_folder(self._imap())
        except FolderError as exc:
            raise ProviderError(f"no Sent folder on the IMAP server: {exc}") from exc
        except OSError as exc:
            raise ProviderError(f"IMAP connection lost looking for Sent: {exc}") from exc
        return self._sent_folder

    def _append_sent(self, raw: bytes) -> str | None:
        """File our copy in Sent; the reason it could not be, or None.

        The message is already delivered: failing to file a copy must not fail the
        send (a retry would send it twice). The reason goes back with the send
        result, and the mailbox page shows it.
        """
        try:
            folder = self._sent_folder_name()
            self._imap().append(folder, raw, flags=[SEEN])
        except (IMAPClientError, OSError, ProviderError) as exc:
            log.warning("append_sent_failed mailbox=%s error=%s", self.email, exc)
            return f"the copy could not be filed in Sent: {exc}"[:500]
        return None

    def find_sent(self, message_id: str) -> SendResult | None:
        client = self._imap()
        folder = self._sent_folder_name()
        try:
            self._selected = None
            client.select_folder(folder, readonly=True)
            uids = client.search(["HEADER", "Message-ID", message_id])
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP search in {folder} failed: {exc}") from exc
        return SendResult(message_id=message_id) if uids else None

    # -- sync ----------------------------------------------------------------

    def watched(self) -> list[str]:
        """The folders synced: the chosen ones, else all but the skipped (one LIST).

        Raises:
            ProviderError: the server would not list its folders.
        """
        if self._chosen is not None:
            return self._chosen
        try:
            return watched_folders(self._imap(), self.skip_folders)
        except FolderError as exc:
            raise ProviderError(f"IMAP folder listing failed: {exc}") from exc
        except OSError as exc:
            raise ProviderError(f"IMAP connection lost listing folders: {exc}") from exc

    def changes(self, cursor: dict[str, Any] | None, since: datetime) -> Iterator[ChangeBatch]:
        cursor = cursor or {}
        client = self._imap()
        self._selected = None  # a new sync: ask the server for each folder's UIDVALIDITY
        shaped = cursor.get("shape") == SHAPE  # else a flat cursor: states alone
        known = dict(cursor.get("well_known") or {}) if shaped else {}
        # Sent too while an add-on's draft waits (worker.sync.sent_mail), never as replies.
        sent_since = self._sent_since if self._chosen is None else None
        if sent_since is not None:
            known["sentitems"] = self._sent_folder_name()
        plan = FolderReads.start(
            cursor if shaped else {},
            folder_states(cursor),
            known,
            self.skip_folders,
            lambda ids: (self.watched(), dict(ids)),
            sent_since,
        )
        yield from plan.batches(partial(self._read_folder, client, plan), since, {"shape": SHAPE})

    def _read_folder(
        self,
        client: imapclient.IMAPClient,
        plan: FolderReads,
        folder: str,
        state: Any,
        listed_from: datetime,
    ) -> Iterator[tuple[list[HeaderSummary], dict[str, Any]]]:
        """The new messages of `folder` in batches, each with the folder's state after it
        (one, empty, when there is none); Sent's listed only, never read as replies.
        Raises FolderGoneError (SELECT refused, the folder gone), else ProviderError."""
        previous = state if isinstance(state, dict) else None
        try:
            uidvalidity = self._select(client, folder)
            if previous is not None and previous.get("uidvalidity") == uidvalidity:
                last_uid = int(previous.get("last_uid", 0))
                # An explicit top, not "*": Mailutils 3.15 answers "UID n:*" with nothing.
                wanted = f"{last_uid + 1}:{MAX_UID}"
                uids = [u for u in client.search(["UID", wanted]) if u > last_uid]
            else:
                if previous is not None:
                    log.warning(
                        "uidvalidity_changed mailbox=%s folder=%s old=%s new=%s",
                        self.email,
                        folder,
                        previous.get("uidvalidity"),
                        uidvalidity,
                    )
                    synced_on = date.fromisoformat(
                        previous.get("synced_on") or listed_from.date().isoformat()
                    )
                    window_start = synced_on - REBUILD_WINDOW
                else:
                    window_start = listed_from.date()
                last_uid = 0
                uids = client.search(["SINCE", window_start])
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP search in {folder} failed: {exc}") from exc
        uids = sorted(uids)
        today = datetime.now(UTC).date().isoformat()
        if not uids:
            yield [], {"uidvalidity": uidvalidity, "last_uid": last_uid, "synced_on": today}
            return
        for start in range(0, len(uids), BATCH_SIZE):
            chunk = uids[start : start + BATCH_SIZE]
            messages = (
                [in_sent(f"{uidvalidity}:{uid}:{folder}") for uid in chunk]
                if folder == plan.sent and folder not in plan.folders
                else self._summaries(client, folder, uidvalidity, chunk)
            )
            last_uid = max(last_uid, chunk[-1])
            yield messages, {"uidvalidity": uidvalidity, "last_uid": last_uid, "synced_on": today}

    def _select(self, client: imapclient.IMAPClient, folder: str) -> int:
        """Select `folder` read-write (BODY.PEEK leaves flags alone); its UIDVALIDITY.

        Read-write, not EXAMINE: Courier keeps a folder's UID list (courierimapuiddb)
        only when a read-write session opens it; examined only, it makes up a new
        UIDVALIDITY for every session (measured: every second), each sync would
        rebuild, and a message listed could not be fetched by its UID. A folder
        the server shows read-only is examined. Selected once per connection.
        """
        if self._selected is not None and self._selected[0] == folder:
            return self._selected[1]
        self._selected = None  # a SELECT refused leaves none selected (RFC 3501 6.3.1)
        try:
            info = client.select_folder(folder, readonly=False)
        except IMAPClientError:  # a lost connection fails the second try too, as abort
            try:
                info = client.select_folder(folder, readonly=True)
            except IMAPClientAbortError:
                raise
            except IMAPClientError as exc:
                # Refused: a folder deleted or renamed since it was listed (LIST shows it no
                # more, or as a mere parent), or a server that will not open it now.
                shown = [f for f, _, name in client.list_folders("", folder) if name == folder]
                if not any(_NO_SELECT.isdisjoint(f.lower() for f in flags) for flags in shown):
                    raise FolderGoneError(folder) from exc
                raise
        validity = int(info[b"UIDVALIDITY"])
        self._selected = (folder, validity)
        return validity

    def _summaries(
        self, client: imapclient.IMAPClient, folder: str, uidvalidity: int, uids: list[int]
    ) -> list[HeaderSummary]:
        """Header summaries of `uids`; a message whose headers cannot be read stops the sync.

        Raises:
            ProviderError: permanent when the server's answer cannot be read or leaves
                out the headers of a message that is still there (never "no candidates").
        """
        # INTERNALDATE as the server's aware time, not imapclient's naive local one.
        client.normalise_times = False
        try:
            fetched = client.fetch(uids, [_HEADER_ITEM, b"RFC822.SIZE", b"INTERNALDATE"])
        except ProtocolError as exc:
            raise ProviderError(
                f"the IMAP server's answer to the header FETCH in {folder} cannot be read: {exc}",
                permanent=True,
            ) from exc
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP header fetch in {folder} failed: {exc}") from exc
        summaries = []
        unanswered = []
        for uid in uids:
            data = fetched.get(uid)
            if data is None or not answers_request(data):
                unanswered.append(uid)  # expunged since the SEARCH, or left out
                continue
            block = find_header_block(data, HEADER_NAMES)
            if block is None:
                items = ", ".join(sorted(k.decode("latin-1") for k in data))
                raise ProviderError(
                    f"the IMAP server answered FETCH for UID {uid} in {folder} without the "
                    f"headers asked for (it sent: {items})",
                    permanent=True,
                )
            summaries.append(self._summary(folder, uidvalidity, uid, data, block))
        self._check_expunged(client, folder, unanswered)
        return summaries

    def _summary(
        self, folder: str, uidvalidity: int, uid: int, data: dict[bytes, Any], block: bytes
    ) -> HeaderSummary:
        fetch_ref = f"{uidvalidity}:{uid}:{folder}"
        internal = data.get(b"INTERNALDATE")
        received = (
            internal.astimezone(UTC) if isinstance(internal, datetime) and internal.tzinfo else None
        )
        size = int(data.get(b"RFC822.SIZE") or 0) or None
        # Identity for a message without a Message-ID: what survives a UIDVALIDITY change.
        stable = f"{folder}:{received.isoformat() if received else uid}:{size}"
        summary = summarize_headers(block, stable)
        if summary.rfc_message_id is not None:
            self._listed_ids[fetch_ref] = summary.rfc_message_id
        return HeaderSummary(
            provider_id=summary.provider_id,
            fetch_ref=fetch_ref,
            rfc_message_id=summary.rfc_message_id,
            from_addr=summary.from_addr,
            subject=summary.subject,
            candidates=summary.candidates,
            headers=summary.headers,
            size=size,
            received_at=received,
        )

    def _check_expunged(self, client: imapclient.IMAPClient, folder: str, uids: list[int]) -> None:
        """UIDs FETCH did not answer must be gone (expunged meanwhile), or the sync stops."""
        if not uids:
            return
        try:
            still_there = client.search(["UID", ",".join(str(u) for u in uids)])
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP search in {folder} failed: {exc}") from exc
        if still_there:
            raise ProviderError(
                f"the IMAP server gave no header FETCH answer for UIDs "
                f"{sorted(still_there)[:10]} in {folder}, which are still there",
                permanent=True,
            )

    def fetch(self, fetch_ref: str, max_bytes: int) -> bytes:
        validity_text, uid_text, folder = fetch_ref.split(":", 2)
        client = self._imap()
        try:
            uid = int(uid_text)
            if self._select(client, folder) != int(validity_text):
                uid = self._find_again(client, folder, fetch_ref)
            item = f"BODY.PEEK[]<0.{max_bytes}>".encode()
            data = client.fetch([uid], [item]).get(uid)
        except FolderGoneError as exc:
            # Renamed or deleted since listed: the next sync lists again and finds the
            # message where it is now (by Message-ID, never recorded twice).
            raise ProviderError(f"the folder {folder} is gone since it was listed") from exc
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP fetch in {folder} failed: {exc}") from exc
        if not data:
            raise ProviderError(f"message {uid} vanished from {folder}", permanent=True)
        body = find_message(data)
        if body is None:
            raise ProviderError(f"IMAP server returned no body for {uid} in {folder}")
        return body

    def _find_again(self, client: imapclient.IMAPClient, folder: str, fetch_ref: str) -> int:
        """The UID of a listed message after the server renumbered the folder (by Message-ID).

        Raises:
            ProviderError: transient: the next sync re-lists the folder's rebuild window.
        """
        message_id = self._listed_ids.get(fetch_ref)
        found = client.search(["HEADER", "Message-ID", message_id]) if message_id else []
        if not found:
            raise ProviderError(f"UIDVALIDITY of {folder} changed during sync")
        log.info("imap_refound_after_uidvalidity folder=%s message_id=%s", folder, message_id)
        return int(found[0])

    # -- push ----------------------------------------------------------------

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        """Hold IDLE on INBOX until `stop` is set, calling `on_change` on new mail.

        On this thread; the listener drives `watch_steps` itself. Raises
        ProviderError when the connection fails; the caller reconnects.
        """
        run_blocking(self.watch_steps(on_change), stop)

    def watch_steps(self, on_change: Callable[[], None]) -> Steps:
        """`watch` as steps (worker.sync.watch_steps): IDLE on INBOX until closed.

        Raises ProviderError when the connection fails.
        """
        try:
            client = self._imap()
            client.select_folder("INBOX", readonly=True)
            if b"IDLE" not in client.capabilities():
                raise ProviderError("IMAP server does not support IDLE", permanent=True)
            cycle = IDLE_RENEW_SECONDS if self.push_alive is None else PUSH_ALIVE_SECONDS
            yield from idle_steps(
                client, on_change, cycle=cycle, alive=self.push_alive, answer_within=TIMEOUT_SECONDS
            )
        except (TimeoutError, IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP IDLE on {self.email} lost: {exc}") from exc
