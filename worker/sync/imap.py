"""IMAP + SMTP mailboxes: any server, with a username and password.

Sending goes through SMTP with the Message-ID we chose, then the exact bytes are
appended to the Sent folder (`\\Sent` special-use, else a folder with a usual
name) so the user sees what went out — unless the mailbox says its server files
sent mail itself (Gmail does; a second copy would be a duplicate).

Sync keeps, per folder, ``{"uidvalidity": V, "last_uid": U, "synced_on": date}``::

    no cursor ───────────────▶ UID SEARCH SINCE <connected on>      (first sync)
    same UIDVALIDITY ────────▶ UID SEARCH UID U+1:*                 (incremental)
    UIDVALIDITY changed ─────▶ UID SEARCH SINCE <synced_on - 2 days> (rebuild)

Only a handful of headers are fetched per message (`HEADER_FIELDS`); the whole
message is fetched only when the engine asks (a match, or a likely report), and
never more than the configured size. Message identity for the engine is the
RFC Message-ID (stable across a UIDVALIDITY change), else a digest of the
headers, so a rebuild re-sees messages without recording anything twice.

`watch()` holds IMAP IDLE on INBOX for the `listener` process and calls back on
new mail; it re-issues IDLE every 25 minutes (RFC 2177 lets servers drop an idle
client after 30).

imapclient and smtplib are imported here only.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SEEN, SENT

from config import get_settings
from worker.sync.base import (
    ChangeBatch,
    HeaderSummary,
    MailboxProvider,
    OutgoingMessage,
    ProviderError,
    SendResult,
)
from worker.sync.mime import build_mime, summarize_headers

log = logging.getLogger(__name__)

HEADER_FIELDS = (
    "MESSAGE-ID IN-REPLY-TO REFERENCES FROM SUBJECT DATE CONTENT-TYPE AUTO-SUBMITTED "
    "X-AUTOREPLY X-AUTORESPOND PRECEDENCE RETURN-PATH X-FAILED-RECIPIENTS"
)
_HEADER_ITEM = f"BODY.PEEK[HEADER.FIELDS ({HEADER_FIELDS})]".encode()
_HEADER_KEY = f"BODY[HEADER.FIELDS ({HEADER_FIELDS})]".encode()
BATCH_SIZE = 200
REBUILD_WINDOW = timedelta(days=2)
IDLE_RENEW_SECONDS = 25 * 60
TIMEOUT_SECONDS = 60
SECURITY_MODES = ("none", "starttls", "tls")


def _connection_settings(credentials: dict[str, Any], which: str) -> dict[str, Any]:
    settings = credentials.get(which)
    if not isinstance(settings, dict):
        raise ProviderError(f"mailbox has no {which} settings", permanent=True)
    return settings


def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _folder_cursor(cursor: dict[str, Any], folder: str) -> dict[str, Any] | None:
    value = cursor.get(folder)
    return value if isinstance(value, dict) else None


def _server_words(said: object, password: object) -> str:
    """What a server said when it refused a login, as ": <words>" (or "" if nothing).

    Shown to the user and stored as the mailbox's status reason, so it is cut
    short, and the password is blanked out should a server ever echo it.
    """
    text = said.decode("utf-8", "replace") if isinstance(said, bytes) else str(said)
    if len(text) > 2 and text[:2] in ("b'", 'b"') and text[-1] == text[1]:
        text = text[2:-1]  # imapclient's LoginError holds the repr of the server's bytes
    text = " ".join(text.split())[:200]
    if isinstance(password, str) and password:
        text = text.replace(password, "[password]")
    return f": {text}" if text else ""


class ImapProvider(MailboxProvider):
    kind: ClassVar[str] = "imap"

    def __init__(self, email_address: str, credentials: dict[str, Any]) -> None:
        self.email = email_address
        self._imap_settings = _connection_settings(credentials, "imap")
        self._smtp_settings = _connection_settings(credentials, "smtp")
        folders = credentials.get("folders") or ["INBOX"]
        self.folders: list[str] = [str(f) for f in folders]
        self.append_to_sent: bool = bool(credentials.get("append_to_sent", True))
        self._sent_folder: str | None = credentials.get("sent_folder")
        self._client: imapclient.IMAPClient | None = None

    # -- connections ---------------------------------------------------------

    def _imap(self) -> imapclient.IMAPClient:
        if self._client is not None:
            return self._client
        s = self._imap_settings
        security = s.get("security", "tls")
        try:
            client = imapclient.IMAPClient(
                s["host"],
                port=int(s["port"]),
                ssl=security == "tls",
                ssl_context=_ssl_context() if security == "tls" else None,
                timeout=TIMEOUT_SECONDS,
            )
            if security == "starttls":
                client.starttls(_ssl_context())
            client.login(s["username"], s["password"])
            # Most servers list their capabilities in the answer to LOGIN, but
            # imaplib forgets it at the next SELECT/EXAMINE and imapclient then asks
            # again (CAPABILITY: ~450 bytes from Dovecot, a fifth of a push sync's
            # traffic). Reading them now keeps the LOGIN answer; a server that sent
            # none is asked here instead of later.
            client.capabilities()
        except LoginError as exc:
            reason = _server_words(exc, s.get("password"))
            raise ProviderError(
                f"IMAP server refused the login for {s.get('username')}{reason}",
                needs_reconnect=True,
            ) from exc
        except (IMAPClientError, OSError, ssl.SSLError) as exc:
            raise ProviderError(f"IMAP connection to {s.get('host')} failed: {exc}") from exc
        self._client = client
        return client

    def close(self) -> None:
        if self._client is not None:
            # The connection may already be gone: closing is best effort.
            with contextlib.suppress(IMAPClientError, OSError):
                self._client.logout()
            self._client = None

    def _smtp(self) -> smtplib.SMTP:
        s = self._smtp_settings
        security = s.get("security", "starttls")
        try:
            # The EHLO name is ours to give; without it smtplib asks DNS for an FQDN.
            helo = urlsplit(get_settings().public_base_url).hostname or "localhost"
            if security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    s["host"],
                    int(s["port"]),
                    local_hostname=helo,
                    timeout=TIMEOUT_SECONDS,
                    context=_ssl_context(),
                )
            else:
                smtp = smtplib.SMTP(
                    s["host"], int(s["port"]), local_hostname=helo, timeout=TIMEOUT_SECONDS
                )
                if security == "starttls":
                    smtp.starttls(context=_ssl_context())
            smtp.login(s["username"], s["password"])
        except smtplib.SMTPAuthenticationError as exc:
            reason = _server_words(exc.smtp_error, s.get("password"))
            raise ProviderError(
                f"SMTP server refused the login for {s.get('username')}{reason}",
                needs_reconnect=True,
            ) from exc
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise ProviderError(f"SMTP connection to {s.get('host')} failed: {exc}") from exc
        return smtp

    def verify(self) -> None:
        self._imap()
        smtp = self._smtp()
        with contextlib.suppress(smtplib.SMTPException, OSError):
            smtp.quit()

    # -- sending -------------------------------------------------------------

    def send(self, message: OutgoingMessage) -> SendResult:
        raw = build_mime(message)
        recipients = [*message.to, *message.cc]
        smtp = self._smtp()
        try:
            refused = smtp.sendmail(message.from_addr, recipients, raw)
        except smtplib.SMTPRecipientsRefused as exc:
            raise ProviderError(
                f"every recipient was refused: {sorted(exc.recipients)}", permanent=True
            ) from exc
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            raise ProviderError(
                f"SMTP server answered {exc.smtp_code} {exc.smtp_error!r}", permanent=permanent
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ProviderError(f"SMTP send failed: {exc}") from exc
        finally:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
        if refused:
            log.warning(
                "smtp_partial_refusal message_id=%s refused=%s", message.message_id, sorted(refused)
            )
        if self.append_to_sent:
            self._append_sent(raw)
        return SendResult(message_id=message.message_id)

    def _sent_folder_name(self) -> str:
        if self._sent_folder:
            return self._sent_folder
        client = self._imap()
        found = client.find_special_folder(SENT)
        if found is None:
            found = "Sent"
            with contextlib.suppress(IMAPClientError):  # it may exist without the flag
                client.create_folder(found)
        self._sent_folder = str(found)
        return self._sent_folder

    def _append_sent(self, raw: bytes) -> None:
        # The message is already delivered: failing to file a copy must not fail the
        # send (a retry would send it twice). It is logged for the user to see.
        try:
            self._imap().append(self._sent_folder_name(), raw, flags=[SEEN])
        except (IMAPClientError, OSError, ProviderError) as exc:
            log.warning("append_sent_failed mailbox=%s error=%s", self.email, exc)

    def find_sent(self, message_id: str) -> SendResult | None:
        client = self._imap()
        try:
            client.select_folder(self._sent_folder_name(), readonly=True)
            uids = client.search(["HEADER", "Message-ID", message_id])
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP search in Sent failed: {exc}") from exc
        return SendResult(message_id=message_id) if uids else None

    # -- sync ----------------------------------------------------------------

    def changes(self, cursor: dict[str, Any] | None, since: datetime) -> Iterator[ChangeBatch]:
        state = dict(cursor or {})
        client = self._imap()
        for folder in self.folders:
            try:
                info = client.select_folder(folder, readonly=True)
                uidvalidity = int(info[b"UIDVALIDITY"])
                previous = _folder_cursor(state, folder)
                if previous is not None and previous.get("uidvalidity") == uidvalidity:
                    last_uid = int(previous.get("last_uid", 0))
                    uids = [u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid]
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
                            previous.get("synced_on") or since.date().isoformat()
                        )
                        window_start = synced_on - REBUILD_WINDOW
                    else:
                        window_start = since.date()
                    last_uid = 0
                    uids = client.search(["SINCE", window_start])
            except (IMAPClientError, OSError) as exc:
                raise ProviderError(f"IMAP search in {folder} failed: {exc}") from exc
            uids = sorted(uids)
            today = datetime.now(UTC).date().isoformat()
            if not uids:
                state[folder] = {
                    "uidvalidity": uidvalidity,
                    "last_uid": last_uid,
                    "synced_on": today,
                }
                yield ChangeBatch(messages=[], cursor=dict(state))
                continue
            for start in range(0, len(uids), BATCH_SIZE):
                chunk = uids[start : start + BATCH_SIZE]
                messages = self._summaries(client, folder, uidvalidity, chunk)
                last_uid = max(last_uid, chunk[-1])
                state[folder] = {
                    "uidvalidity": uidvalidity,
                    "last_uid": last_uid,
                    "synced_on": today,
                }
                yield ChangeBatch(messages=messages, cursor=dict(state))

    def _summaries(
        self, client: imapclient.IMAPClient, folder: str, uidvalidity: int, uids: list[int]
    ) -> list[HeaderSummary]:
        try:
            fetched = client.fetch(uids, [_HEADER_ITEM, b"RFC822.SIZE", b"INTERNALDATE"])
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP header fetch in {folder} failed: {exc}") from exc
        summaries = []
        for uid in uids:
            data = fetched.get(uid)
            if data is None:  # expunged between SEARCH and FETCH
                continue
            fetch_ref = f"{uidvalidity}:{uid}:{folder}"
            summary = summarize_headers(data.get(_HEADER_KEY) or b"", fetch_ref)
            internal = data.get(b"INTERNALDATE")
            received = (
                internal.astimezone(UTC)
                if isinstance(internal, datetime) and internal.tzinfo
                else None
            )
            summaries.append(
                HeaderSummary(
                    provider_id=summary.provider_id,
                    fetch_ref=fetch_ref,
                    rfc_message_id=summary.rfc_message_id,
                    from_addr=summary.from_addr,
                    subject=summary.subject,
                    candidates=summary.candidates,
                    headers=summary.headers,
                    size=int(data.get(b"RFC822.SIZE") or 0) or None,
                    received_at=received,
                )
            )
        return summaries

    def fetch(self, fetch_ref: str, max_bytes: int) -> bytes:
        validity_text, uid_text, folder = fetch_ref.split(":", 2)
        client = self._imap()
        try:
            info = client.select_folder(folder, readonly=True)
            if int(info[b"UIDVALIDITY"]) != int(validity_text):
                raise ProviderError(f"UIDVALIDITY of {folder} changed during sync")
            uid = int(uid_text)
            item = f"BODY.PEEK[]<0.{max_bytes}>".encode()
            data = client.fetch([uid], [item]).get(uid)
        except (IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP fetch in {folder} failed: {exc}") from exc
        if not data:
            raise ProviderError(f"message {uid} vanished from {folder}", permanent=True)
        for key, value in data.items():
            if key.startswith(b"BODY[") and isinstance(value, bytes):
                return value
        raise ProviderError(f"IMAP server returned no body for {uid} in {folder}")

    # -- push ----------------------------------------------------------------

    def watch(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        """Hold IDLE on INBOX until `stop` is set, calling `on_change` on new mail.

        Raises ProviderError when the connection fails; the caller reconnects.
        """
        client = self._imap()
        try:
            client.select_folder("INBOX", readonly=True)
            if b"IDLE" not in client.capabilities():
                raise ProviderError("IMAP server does not support IDLE", permanent=True)
            while not stop.is_set():
                client.idle()
                renew_at = time.monotonic() + IDLE_RENEW_SECONDS
                changed = False
                while not stop.is_set() and time.monotonic() < renew_at:
                    responses = client.idle_check(timeout=1)
                    if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                        changed = True
                        break
                client.idle_done()
                if changed:
                    on_change()
        except (TimeoutError, IMAPClientError, OSError) as exc:
            raise ProviderError(f"IMAP IDLE on {self.email} lost: {exc}") from exc
