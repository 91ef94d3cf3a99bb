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

`watched_folders` is the other direction: every folder a reply may be filed in
(a server rule's "Customers"), i.e. every selectable folder but the skipped
ones. A skip entry that is a role word (sent, drafts, trash, junk, spam) names
that folder by its RFC 6154 flag where the server has one, else by its usual
names as the last part of the folder's name (``INBOX.Sent`` on Courier);
anything else names a folder by its full or last name. The virtual \\All and
\\Flagged folders (Gmail's All Mail, Starred) hold copies of other folders'
mail and are never synced. INBOX comes first; the rest in the server's order.

`folder_states` reads the folders' states out of a sync cursor of either shape
(worker.sync.imap); `idle_watches_every_folder` says from it whether IDLE on
INBOX sees every folder synced.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import imapclient
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import ALL, DRAFTS, FLAGGED, JUNK, SENT, TRASH

log = logging.getLogger(__name__)

SENT_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "Sent-Mail")
# Role words a skip list may use: the RFC 6154 flag, and the names servers use.
ROLES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "sent": (SENT, SENT_NAMES),
    "drafts": (DRAFTS, ("Drafts", "Draft")),
    "trash": (TRASH, ("Trash", "Deleted Items", "Deleted Messages", "Deleted", "Bin")),
    "junk": (JUNK, ("Junk", "Spam", "Junk E-mail", "Junk Email", "Bulk Mail")),
}
ROLES["spam"] = ROLES["junk"]
# Never synced: virtual folders (copies of other folders' mail) and non-folders.
_NEVER = frozenset(f.decode().lower() for f in (ALL, FLAGGED, b"\\Noselect", b"\\NonExistent"))


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


def watched_folders(client: imapclient.IMAPClient, skip: tuple[str, ...] | list[str]) -> list[str]:
    """Every selectable folder but the skipped ones (module docstring), INBOX first.

    Raises:
        FolderError: the server refused to list its folders.
    """
    try:
        listed = client.list_folders()
    except IMAPClientError as exc:
        raise FolderError(f"the server refused to list folders: {exc}") from exc
    wanted = [w.strip().lower() for w in skip if w.strip()]
    flags_skipped = {ROLES[w][0].decode().lower() for w in wanted if w in ROLES} | _NEVER
    names_skipped = {n.lower() for w in wanted if w in ROLES for n in ROLES[w][1]}
    names_skipped |= {w for w in wanted if w not in ROLES}
    found: list[str] = []
    for flags, delimiter, listed_name in listed:
        name = str(listed_name)
        lowered = {_text(f).lower() for f in flags}
        if lowered & flags_skipped:
            continue
        sep = _text(delimiter) if delimiter else ""
        last = name.rsplit(sep, 1)[-1] if sep else name
        if name.upper() != "INBOX" and (
            name.lower() in names_skipped or last.lower() in names_skipped
        ):
            continue
        found.append(name)
    inbox = [n for n in found if n.upper() == "INBOX"]
    return [*(inbox or ["INBOX"]), *(n for n in found if n.upper() != "INBOX")]


SHAPE = "folders"  # the cursor's shape since the folder list is kept (flat before)


def folder_states(cursor: dict[str, Any] | None) -> dict[str, Any]:
    """The folders' states in an IMAP cursor of either shape (the dict itself, not a copy).

    A flat cursor (before the list was kept) is the states; any folder name may
    be a key there, but never with a string value, so ``"shape"`` tells them apart.
    """
    cursor = cursor if cursor is not None else {}
    if cursor.get("shape") == SHAPE and isinstance(cursor.get("folders"), dict):
        states: dict[str, Any] = cursor["folders"]
        return states
    return cursor


def idle_watches_every_folder(cursor: dict[str, Any] | None) -> bool:
    """True when IDLE, which holds INBOX only, sees every folder the mailbox's syncs read.

    From the sync cursor: the folders last listed (or, before that, those with a
    state), Sent aside (read only while an add-on's draft waits, never for
    replies). A reply a server rule files in "Customers" raises no IDLE on INBOX:
    such a mailbox's push cannot stand in for a sync (worker.sequences.freshness)
    nor spare it the minute's poll (worker.sync.polling). No cursor: not known.
    """
    if not isinstance(cursor, dict):
        return False
    if cursor.get("shape") == SHAPE:
        listing, known = cursor.get("listing"), cursor.get("well_known")
        listed = listing.get("ids") if isinstance(listing, dict) else None
        folders = listed if isinstance(listed, list) else list(folder_states(cursor))
        sent = known.get("sentitems") if isinstance(known, dict) else None
        folders = [f for f in folders if f != sent]
    else:
        folders = [name for name, state in cursor.items() if isinstance(state, dict)]
    return bool(folders) and all(str(f).upper() == "INBOX" for f in folders)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
