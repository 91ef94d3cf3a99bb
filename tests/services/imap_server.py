"""What every IMAP test server offers the tests: Dovecot, Courier, GNU Mailutils.

Owns the client side the tests share: logging in as a user, reading a folder
back, waiting for a message to land, and the facts a test needs to know about a
server (where the user's sent copies live, how mail is delivered into it). Each
server module (`dovecot`, `courier`, `mailutils`) subclasses `ImapTestServer`
and owns its own process, configuration and delivery.

    server.ensure_user("rep@seller.test")          # a mailbox exists and logs in
    server.deliver("rep@seller.test", raw)         # real delivery (LMTP, deliverquota, putmail)
    server.wait_for_message(user, has_message_id(mid), folder=server.sent_folder)

Every user logs in with the one shared password (`SHARED_PASSWORD`, which the
log scan in tests/security looks for), and usernames are full email addresses.
Must never: read or change a system-wide mail configuration, or listen anywhere
but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Self, TypedDict

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from tests.services import process
from tests.services.process import ServiceError

SHARED_PASSWORD = "sightline-test-password"


def unique_address(domain: str = "acme.test", prefix: str = "prospect") -> str:
    """A fresh address no other test uses, e.g. `prospect-1f2e3d4c5b6a@acme.test`."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}@{domain}"


def has_message_id(message_id: str) -> Callable[[EmailMessage], bool]:
    """Predicate for `wait_for_message`: the message carries exactly this Message-ID."""
    wanted = message_id.strip()
    return lambda message: str(message.get("Message-ID", "")).strip() == wanted


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


class SmtpDelivery(TypedDict, total=False):
    """Keyword arguments for `tests.services.smtp.SmtpServer`: where accepted mail goes."""

    lmtp_host: str
    lmtp_port: int
    deliver_command: list[str]


class ImapTestServer:
    """The client-side helpers every test server shares; subclasses start the server.

    Attributes a subclass sets: `name` (for test ids and messages), `imap_port`,
    `password`, `sent_folder` (where a client that files its own copies finds
    them once the provider created it: "Sent", or "INBOX.Sent" under Courier's
    personal namespace).
    """

    host = "127.0.0.1"
    name = "imap"
    sent_folder = "Sent"

    def __init__(self, password: str = SHARED_PASSWORD) -> None:
        if not password or any(c.isspace() for c in password):
            raise ValueError("the shared password must be non-empty and without whitespace")
        self.password = password
        self.imap_port = 0

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def _start_retrying(
        self,
        launch: Callable[[], subprocess.Popen[bytes]],
        what: str,
        timeout: float,
        also_ready: Callable[[], bool] = lambda: True,
    ) -> Self:
        """Run `launch` until the server it starts greets on `imap_port` (and `also_ready`).

        `launch` picks a fresh folder and port each time: a port another process
        took between `free_port()` and the server's bind is tried again, twice.
        Anything else that keeps the server from greeting raises ServiceError
        with its log.
        """
        for attempt in range(3):
            proc = launch()
            try:
                process.wait_until(
                    lambda: process.greets(self.host, self.imap_port) and also_ready(),
                    what=what,
                    proc=proc,
                    log_path=self.log_path,
                    timeout=timeout,
                )
            except ServiceError:
                taken = "in use" in process.log_tail(self.log_path)
                self.stop()
                if taken and attempt < 2:
                    continue
                raise
            return self
        raise AssertionError("unreachable")

    @staticmethod
    def _stop_group(proc: subprocess.Popen[bytes] | None, root: Path) -> None:
        """Stop a server started as its own process group, then remove its folder."""
        if proc is not None:
            pgid = proc.pid
            process.stop(proc, timeout=0.5, group=True)
            process.kill_group(pgid)
        if root != Path():
            process.remove_dir(root)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def ensure_user(self, address: str) -> None:
        """Make sure `address` can log in and has an INBOX (servers that need no setup: nothing)."""

    def deliver(self, rcpt: str, raw: bytes, mail_from: str = "sender@sightline.test") -> None:
        """Put a message into `rcpt`'s INBOX the way this server's mail system does."""
        raise NotImplementedError

    def smtp_delivery(self) -> SmtpDelivery:
        """How `tests.services.smtp.SmtpServer` hands accepted mail to this server.

        Either ``{"lmtp_host": ..., "lmtp_port": ...}`` or ``{"deliver_command": [...]}``
        (a command run once per recipient, ``{rcpt}`` replaced, the message on stdin).
        """
        raise NotImplementedError

    @contextlib.contextmanager
    def imap(self, user: str) -> Iterator[IMAPClient]:
        """An IMAP connection logged in as `user` (closed on exit)."""
        self.ensure_user(user)
        client = IMAPClient(self.host, port=self.imap_port, ssl=False, timeout=10)
        try:
            client.login(user, self.password)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def file_into(self, user: str, name: str, raw: bytes) -> str:
        """File `raw` in folder `name` (made if missing), as a server-side rule would.

        A server that keeps folders under ``INBOX.`` (Courier) gets ``INBOX.<name>``.
        Returns the folder's full name.
        """
        with self.imap(user) as client:
            existing = {str(n) for _, _, n in client.list_folders()}
            folder = next((f for f in (name, f"INBOX.{name}") if f in existing), None)
            if folder is None:
                try:
                    client.create_folder(name)
                    folder = name
                except IMAPClientError:
                    folder = f"INBOX.{name}"
                    client.create_folder(folder)
            # Arrived now, as a rule files it (Mailutils dates a dateless APPEND otherwise).
            client.append(folder, raw, msg_time=datetime.now(UTC))
            return folder

    def messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Every message in `folder` of `user`'s mailbox, in UID order, read over IMAP."""
        with self.imap(user) as client:
            client.select_folder(folder, readonly=True)
            return [raw for _, raw in fetch_whole(client, client.search("ALL"))]

    def wait_for_message(
        self,
        user: str,
        predicate: Callable[[EmailMessage], bool],
        timeout: float = 10.0,
        folder: str = "INBOX",
    ) -> EmailMessage:
        """Return the first message in `folder` for which `predicate` is true, waiting.

        Polls one IMAP connection (NOOP, then fetches only new UIDs) until a message
        matches. A folder that does not exist yet counts as empty.

        Raises:
            TimeoutError: nothing matched within `timeout` seconds; the message lists
                what the folder holds.
        """
        seen: set[int] = set()
        subjects: list[str] = []
        deadline = time.monotonic() + timeout
        with self.imap(user) as client:
            selected = False
            while True:
                if not selected:
                    try:
                        client.select_folder(folder, readonly=True)
                        selected = True
                    except IMAPClientError:  # not created yet: keep waiting
                        selected = False
                if selected:
                    client.noop()
                    new = [uid for uid in client.search("ALL") if uid not in seen]
                    for uid, raw in fetch_whole(client, new):
                        seen.add(uid)
                        message = parse(raw)
                        if predicate(message):
                            return message
                        subjects.append(f"{message['Message-ID']} {message['Subject']!r}")
                if time.monotonic() > deadline:
                    held = "\n  ".join(subjects) or "(nothing)"
                    raise TimeoutError(
                        f"no matching message in {folder} of {user} on {self.name} after "
                        f"{timeout:.0f} s; it holds:\n  {held}"
                    )
                time.sleep(0.05)


def fetch_whole(client: IMAPClient, uids: list[int]) -> list[tuple[int, bytes]]:
    """(uid, raw message) for `uids`, whatever spelling the server gives BODY[]."""
    if not uids:
        return []
    response = client.fetch(uids, ["BODY.PEEK[]"])
    found = []
    for uid in sorted(response):
        body = next(
            (v for k, v in response[uid].items() if k.startswith(b"BODY[") and k.endswith(b"]")),
            None,
        )
        if isinstance(body, bytes):
            found.append((uid, body))
    return found
