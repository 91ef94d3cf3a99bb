"""Which folders a mailbox syncs and watches: every one but the skipped.

A reply may be filed anywhere a server rule or a filter puts it ("Customers"),
so every provider syncs, and pushes for, every folder but those that never
hold an answer: by default Sent, Drafts, Trash and Junk (SIGHTLINE_SKIP_FOLDERS,
or the mailbox's own ``skip_folders``: its column, set on the API and the
Mailboxes page, handed to the provider in its credentials by
`with_skip_folders`; never kept in the encrypted credentials, which a sync
rewrites when a token rotates). An entry that is a role word names the
provider's own folder for it, whatever it is called (Graph and EWS: the
well-known folder, `exchange_skipped`)::

    role word        IMAP (worker.sync.imap_folders)      Gmail label
    sent             \\Sent, or Sent / Sent Items ...      SENT
    drafts           \\Drafts, or Drafts                   DRAFT
    trash            \\Trash, or Trash / Deleted Items     TRASH
    junk, spam       \\Junk, or Junk / Spam                SPAM

Any other entry names a folder by its name (IMAP), or is a Gmail label id when
written as one (``CATEGORY_PROMOTIONS``). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from config import get_settings
from core.models import MailboxKind
from worker.sync.base import ChangeBatch, HeaderSummary

GMAIL_ROLE_LABELS = {
    "sent": "SENT",
    "drafts": "DRAFT",
    "trash": "TRASH",
    "junk": "SPAM",
    "spam": "SPAM",
}


def skip_list(credentials: dict[str, Any]) -> tuple[str, ...]:
    """The mailbox's own ``skip_folders`` if it has them, else the setting."""
    skip = credentials.get("skip_folders")
    if isinstance(skip, list):
        return tuple(str(f) for f in skip)
    return get_settings().providers.skip_folders


def gmail_skipped_labels(skip: tuple[str, ...]) -> set[str]:
    """The Gmail label ids of the skipped folders."""
    labels = set()
    for entry in (e.strip() for e in skip):
        role = GMAIL_ROLE_LABELS.get(entry.lower())
        if role is not None:
            labels.add(role)
        elif entry.isupper():
            labels.add(entry)
    return labels


# Exchange's well-known folders (Graph's well-known names, EWS's distinguished ids:
# the same words). Outbox, Conversation History (Skype's) and Sync Issues (Outlook's
# conflict copies) never hold a reply: always skipped.
EXCHANGE_ROLE_FOLDERS = {
    "sent": "sentitems",
    "drafts": "drafts",
    "trash": "deleteditems",
    "junk": "junkemail",
    "spam": "junkemail",
}
EXCHANGE_ALWAYS_SKIPPED = ("outbox", "conversationhistory", "syncissues")


def exchange_skipped(skip: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """(well-known folder names, lower-cased display names) of the skipped folders.

    A role word, or a well-known name itself ("deleteditems"), names the folder
    whatever the mailbox's language calls it; any other entry is a display name.
    """
    well_known = set(EXCHANGE_ALWAYS_SKIPPED)
    names = set()
    for entry in (e.strip() for e in skip):
        lowered = entry.lower()
        if lowered in EXCHANGE_ROLE_FOLDERS:
            well_known.add(EXCHANGE_ROLE_FOLDERS[lowered])
        elif lowered in EXCHANGE_ROLE_FOLDERS.values():
            well_known.add(lowered)
        elif entry:
            names.add(lowered)
    return well_known, names


# How long a Graph or EWS sync trusts the folder list an earlier sync made (kept in
# the cursor) instead of listing the tree again: listing costs a request or more and
# a fifth of a push sync. What it can delay, and for how long at most: a sync that
# reads nothing new in the folders it knows, or finds one of them gone, lists again
# at once (a message a rule filed in a folder made since is read by the sync its
# push started), so only a message in a new folder that arrives with another in a
# known one, or a folder moved under a skipped one, waits for this. Never a
# follow-up step: it waits for a list made after it fell due (`listed_at`).
FOLDER_LIST_KEPT = timedelta(minutes=10)

# (ids of the folders to read, the well-known ids to keep) from the folder tree,
# given the well-known ids known so far.
ListFolders = Callable[[dict[str, str]], tuple[list[str], dict[str, str]]]


class FolderGoneError(Exception):
    """A folder read by its id is not there any more (deleted, or out of reach)."""


def kept_listing(listing: Any, skip: tuple[str, ...], now: datetime) -> list[str] | None:
    """The folder ids an earlier sync listed (`folder_listing`), if still to be trusted:
    listed less than FOLDER_LIST_KEPT ago (and not in the future) for the same skip list."""
    if not isinstance(listing, dict) or listing.get("skip") != list(skip):
        return None
    ids, at = listing.get("ids"), listing.get("at")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        return None
    try:
        listed = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        return None
    if listed is None or listed.tzinfo is None:
        return None
    return list(ids) if timedelta(0) <= now - listed < FOLDER_LIST_KEPT else None


def folder_listing(ids: list[str], skip: tuple[str, ...], now: datetime) -> dict[str, Any]:
    """What a cursor keeps of a folder listing, for `kept_listing`."""
    return {"ids": list(ids), "skip": list(skip), "at": now.isoformat()}


# The providers whose syncs keep a folder list (`FolderReads`): IMAP, Graph, EWS.
# Gmail's history covers every label, new ones too: it lists no folders.
LISTING_KINDS = frozenset({MailboxKind.IMAP, MailboxKind.GRAPH, MailboxKind.EXCHANGE})


def listed_at(cursor: Any) -> datetime | None:
    """When the cursor's folder list was made, if every folder on it has been read
    since (each has a state: a sync read it after the list named it); else None.

    What `worker.sequences.freshness` needs of a listing provider: a folder a rule
    made after the list is read by no sync and watched by no push (IDLE holds
    INBOX, an EWS stream the folders of its start), so a step is fresh only on a
    list made after it fell due. A list whose folder is still unread (a sync that
    listed, then failed), or gone since, is no proof.
    """
    if not isinstance(cursor, dict):
        return None
    listing, states = cursor.get("listing"), cursor.get("folders")
    if not isinstance(listing, dict) or not isinstance(states, dict):
        return None
    ids, at = listing.get("ids"), listing.get("at")
    if not isinstance(ids, list) or not isinstance(at, str):
        return None
    if not all(isinstance(i, str) and isinstance(states.get(i), dict) for i in ids):
        return None
    try:
        listed = datetime.fromisoformat(at)
    except ValueError:
        return None
    return listed if listed.tzinfo is not None else None


def without_listing(cursor: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cursor with its kept list dropped: the sync lists the folders again."""
    if not isinstance(cursor, dict) or "listing" not in cursor:
        return cursor
    return {k: v for k, v in cursor.items() if k != "listing"}


# A folder's pages as a provider reads them: (folder id, its state or None, listed
# since) -> (the page's summaries, the folder's new state) each.
ReadFolder = Callable[[str, Any, datetime], Iterator[tuple[list[HeaderSummary], dict[str, Any]]]]


@dataclass
class FolderReads:
    """The folders one Graph or EWS sync reads, and what its cursor keeps of them.

    `folders` come from a recent sync's list (``cursor["listing"]``) or a new
    one (`list_folders`). `read` reads them in order, then Sent Items while an
    add-on's draft waits (`sent_since`, worker.sync.sent_mail: its summaries
    marked `in_sent`, its state kept between such times), then, if the list was
    kept and the listed folders held nothing new or one was gone, lists again
    and reads the folders made since; `batches` hands that to the engine (EWS and
    IMAP; Graph gathers pages itself). `states`: folder id -> the provider's state.
    """

    list_folders: ListFolders
    skip: tuple[str, ...]
    now: datetime
    sent: str  # Sent Items' id ("" if the mailbox has none)
    sent_since: datetime | None
    states: dict[str, Any]
    folders: list[str]
    ids: dict[str, str]
    listing: dict[str, Any] | None
    kept: bool

    @classmethod
    def start(
        cls,
        cursor: dict[str, Any],
        before: dict[str, Any],
        known: dict[str, str],
        skip: tuple[str, ...],
        list_folders: ListFolders,
        sent_since: datetime | None,
    ) -> FolderReads:
        now = datetime.now(UTC)
        kept = kept_listing(cursor.get("listing"), skip, now)
        if kept is None:
            folders, ids = list_folders(known)
            listing = folder_listing(folders, skip, now)
        else:
            folders, ids, listing = kept, known, cursor["listing"]
        sent = ids.get("sentitems") or ""
        plan = cls(
            list_folders, skip, now, sent, sent_since, {}, folders, ids, listing, kept is not None
        )
        # Folders gone since are dropped; those not read yet keep their state until they are.
        plan._keep(before)
        return plan

    def _keep(self, states: dict[str, Any]) -> None:
        keep = [*self.folders, self.sent]
        self.states = {f: states[f] for f in keep if isinstance(states.get(f), dict)}

    def cursor(self) -> dict[str, Any]:
        cursor = {"folders": dict(self.states), "well_known": self.ids}
        return cursor if self.listing is None else {**cursor, "listing": self.listing}

    def read(self, read_folder: ReadFolder, since: datetime) -> Iterator[list[HeaderSummary]]:
        """What each page `read_folder` reads lists, its folder's new state in `states`
        by then; Sent Items' summaries marked `in_sent`, and never a reason to list again."""
        read_sent = bool(self.sent and self.sent_since) and self.sent not in self.folders
        queue = [*self.folders, *([self.sent] if read_sent else [])]
        done: set[str] = set()
        found = gone = False
        while queue:
            folder_id = queue.pop(0)
            done.add(folder_id)
            in_sent = read_sent and folder_id == self.sent
            start = self.sent_since if in_sent and self.sent_since else since
            try:
                for listed, state in read_folder(folder_id, self.states.get(folder_id), start):
                    self.states[folder_id] = state
                    found = found or (bool(listed) and not in_sent)
                    yield [replace(m, in_sent=True) for m in listed] if in_sent else listed
            except FolderGoneError:
                self.states.pop(folder_id, None)
                gone = True
                if not self.kept:
                    self.listing = None  # listed a moment ago: the next sync lists again
                yield []
            if not queue and self.kept and (gone or not found):
                # Nothing new where we looked: the news may be in a folder made since.
                self.kept = False
                self.folders, ids = self.list_folders(self.ids)
                self.ids = {**self.ids, **ids}
                self.listing = folder_listing(self.folders, self.skip, self.now)
                self._keep(self.states)
                queue = [f for f in self.folders if f not in done]

    def batches(
        self, read_folder: ReadFolder, since: datetime, stamp: dict[str, Any] | None = None
    ) -> Iterator[ChangeBatch]:
        """`read` as the engine takes it: each page that lists something, at once, with
        the cursor after it (`stamp`'s keys added; a later folder's failure must not hold
        up the Inbox's replies); the cursor an empty page moves is handed on with the
        next, or in a last, empty batch (with a list made after the last page, too)."""
        handed: dict[str, Any] | None = None
        for listed in self.read(read_folder, since):
            if listed:
                handed = {**(stamp or {}), **self.cursor()}
                yield ChangeBatch(listed, handed)
        if (last := {**(stamp or {}), **self.cursor()}) != handed:
            yield ChangeBatch([], last)


def with_skip_folders(credentials: dict[str, Any], skip: list[str] | None) -> dict[str, Any]:
    """The credentials a provider is opened with: the mailbox's own `skip_folders`
    (its column, editable on the API and the mailbox page) in force, or none
    (SIGHTLINE_SKIP_FOLDERS). A copy a provider saved back with its tokens never wins."""
    # read_sent_since (worker.sync.sent_mail) is added per sync, never kept either.
    opened = {k: v for k, v in credentials.items() if k not in ("skip_folders", "read_sent_since")}
    if skip is not None:
        opened["skip_folders"] = list(skip)
    return opened


MAX_SKIPPED = 50
MAX_FOLDER_NAME = 200


def check_skip_folders(entries: list[str]) -> list[str]:
    """A mailbox's own skipped folders, trimmed and without repeats.

    Raises:
        ValueError: in the words the API and the mailbox page show.
    """
    if len(entries) > MAX_SKIPPED:
        raise ValueError(f"at most {MAX_SKIPPED} folders can be skipped")
    kept: dict[str, str] = {}
    for entry in (e.strip() for e in entries):
        if not entry:
            raise ValueError("a folder name can't be empty")
        if len(entry) > MAX_FOLDER_NAME:
            raise ValueError(f"a folder name is at most {MAX_FOLDER_NAME} characters")
        if "," in entry:
            raise ValueError(f"“{entry[:40]}”: a folder name can't contain a comma")
        if any(ord(c) < 32 or ord(c) == 127 for c in entry):
            raise ValueError("a folder name can't contain control characters (tabs, line breaks)")
        kept.setdefault(entry.lower(), entry)
    return list(kept.values())


def parse_skip_text(text: str) -> list[str]:
    """The page's text field: folder names separated by commas (blanks ignored)."""
    return check_skip_folders([p for p in text.split(",") if p.strip()])


def skip_in_force(own: list[str] | None) -> list[str]:
    """What a mailbox skips: its own list, else SIGHTLINE_SKIP_FOLDERS."""
    return list(own) if own is not None else list(get_settings().providers.skip_folders)
