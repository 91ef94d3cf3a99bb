"""Which folders a mailbox syncs and watches: every one but the skipped.

A reply may be filed anywhere a server rule or a filter puts it ("Customers"),
so every provider syncs, and pushes for, every folder but those that never
hold an answer: by default Sent, Drafts, Trash and Junk (SIGHTLINE_SKIP_FOLDERS,
or the mailbox's own ``skip_folders`` in its credentials). An entry that is a
role word names the provider's own folder for it, whatever it is called::

    role word        IMAP (worker.sync.imap_folders)      Gmail label
    sent             \\Sent, or Sent / Sent Items ...      SENT
    drafts           \\Drafts, or Drafts                   DRAFT
    trash            \\Trash, or Trash / Deleted Items     TRASH
    junk, spam       \\Junk, or Junk / Spam                SPAM

Any other entry names a folder by its name (IMAP), or is a Gmail label id when
written as one (``CATEGORY_PROMOTIONS``). Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any

from config import get_settings

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
# the same words). Outbox and Conversation History never hold a reply: always skipped.
EXCHANGE_ROLE_FOLDERS = {
    "sent": "sentitems",
    "drafts": "drafts",
    "trash": "deleteditems",
    "junk": "junkemail",
    "spam": "junkemail",
}
EXCHANGE_ALWAYS_SKIPPED = ("outbox", "conversationhistory")


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
