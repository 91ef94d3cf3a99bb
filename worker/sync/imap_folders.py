"""Finding the user's Sent folder on any IMAP server, and making one where there is none.

Servers name and place it differently: Dovecot flags ``Sent`` with RFC 6154's
``\\Sent``; Courier has no SPECIAL-USE and keeps every folder under its personal
namespace ``INBOX.`` (a top-level ``Sent`` is refused: "Invalid mailbox name");
Mailutils has no Sent folder at all until a client creates one; Exchange calls
it ``Sent Items``, Apple ``Sent Messages``, Gmail ``[Gmail]/Sent Mail``. So::

    1. a folder flagged \\Sent in LIST (RFC 6154)                  Dovecot, Gmail, Exchange
    2. else a usual name under a personal namespace (RFC 2342),
       then under INBOX                                            INBOX.Sent, Sent Items …
    3. else create <first personal namespace prefix>Sent           INBOX.Sent on Courier

One LIST and one NAMESPACE per lookup; nothing is created when a folder was
found. Names are compared without regard to case (as users see them).
"""

from __future__ import annotations

import contextlib
import logging

import imapclient
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import SENT

log = logging.getLogger(__name__)

SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "Sent-Mail")


class FolderError(Exception):
    """The server would neither show nor make a Sent folder (the message says what it said)."""


def personal_prefixes(client: imapclient.IMAPClient, inbox_delimiter: str) -> list[str]:
    """The personal namespace prefixes (RFC 2342), or "" when the server has no NAMESPACE."""
    if client.has_capability("NAMESPACE"):
        try:
            personal = client.namespace().personal or ()
        except IMAPClientError:
            personal = ()
        prefixes = [str(prefix) for prefix, _ in personal]
        if prefixes:
            return prefixes
    return ["", f"INBOX{inbox_delimiter}"] if inbox_delimiter else [""]


def find_sent_folder(client: imapclient.IMAPClient) -> str:
    """The name of the user's Sent folder, created under the personal namespace if missing.

    Raises:
        FolderError: LIST failed, or there is no such folder and CREATE was refused.
    """
    try:
        listed = client.list_folders()
    except IMAPClientError as exc:
        raise FolderError(f"the server refused to list folders: {exc}") from exc
    by_lower: dict[str, str] = {}
    inbox_delimiter = ""
    for flags, delimiter, name in listed:
        if any(flag.lower() == SENT.lower() for flag in flags):
            return str(name)
        by_lower[str(name).lower()] = str(name)
        if str(name).upper() == "INBOX" and delimiter:
            inbox_delimiter = delimiter.decode() if isinstance(delimiter, bytes) else delimiter
    prefixes = personal_prefixes(client, inbox_delimiter)
    for prefix in [*prefixes, f"INBOX{inbox_delimiter}" if inbox_delimiter else ""]:
        for name in SENT_NAMES:
            found = by_lower.get(f"{prefix}{name}".lower())
            if found is not None:
                return found
    return _create(client, f"{prefixes[0]}Sent")


def _create(client: imapclient.IMAPClient, name: str) -> str:
    try:
        client.create_folder(name)
    except IMAPClientError as exc:
        # Listed nowhere but there (a server that hides unsubscribed folders): use it.
        if "exist" not in str(exc).lower():
            raise FolderError(f"the server refused to create the folder {name}: {exc}") from exc
    with contextlib.suppress(IMAPClientError):  # unsubscribed, mail clients may hide it
        client.subscribe_folder(name)
    log.info("imap_sent_folder_created folder=%s", name)
    return name
