"""The fake tenant's mail folder trees, as Graph v1.0 shows them.

Facts modelled (Graph v1.0 mailFolder, "List mailFolders", "List childFolders"):

- ``GET /me/mailFolders`` lists the top-level folders (the children of
  msgfolderroot: Inbox, Drafts, Sent Items, Deleted Items, Junk Email, Outbox,
  Archive, Conversation History), ``.../{id}/childFolders`` a folder's
  children; ten a page by default, ``$top`` more, paged by an
  ``@odata.nextLink`` carrying ``$skip``.
- A folder is ``{id, displayName, parentFolderId, childFolderCount,
  unreadItemCount, totalItemCount, isHidden}``: v1.0 has no well-known-name
  property. A well-known name (``sentitems``) works in place of an id in any
  path, whatever the folder is called in the mailbox's language.
- Folder ids are opaque base64 (``AAMkAGI2…AAA=``), unlike item ids stable.

Messages keep their folder as a key: the well-known name for a well-known
folder, the id for any other (so `GraphMessage.folder` stays "inbox" etc.).
"""

from __future__ import annotations

import base64
import secrets
import threading
from dataclasses import dataclass
from typing import Any

from .store import GraphUser

WELL_KNOWN = {
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
    "archive": "Archive",
    "conversationhistory": "Conversation History",
}


def folder_id() -> str:
    return "AAMkAGI2" + base64.urlsafe_b64encode(secrets.token_bytes(33)).decode() + "AAA="


@dataclass
class FakeFolder:
    key: str  # the well-known name, or the id
    id: str
    name: str
    parent: str | None  # the parent's key; None under msgfolderroot
    hidden: bool = False


class FolderTree:
    """Every user's folders, keyed by the user's object id."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.root_ids: dict[str, str] = {}
        self.by_user: dict[str, dict[str, FakeFolder]] = {}

    def clear(self) -> None:
        with self.lock:
            self.by_user.clear()
            self.root_ids.clear()

    def folders(self, user: GraphUser) -> dict[str, FakeFolder]:
        with self.lock:
            found = self.by_user.get(user.oid)
            if found is None:
                found = self.by_user[user.oid] = {
                    key: FakeFolder(key, folder_id(), name, None)
                    for key, name in WELL_KNOWN.items()
                }
                self.root_ids[user.oid] = folder_id()
            return found

    def resolve(self, user: GraphUser, given: str) -> str | None:
        """The key of the folder `given` names (a well-known name or an id)."""
        folders = self.folders(user)
        if given.lower() in folders:
            return given.lower()
        return next((f.key for f in folders.values() if f.id == given), None)

    def ensure(self, user: GraphUser, name: str, parent: str | None = None) -> str:
        """The key of the folder called `name` under `parent`, made if it is not there."""
        with self.lock:
            folders = self.folders(user)
            for folder in folders.values():
                if folder.parent == parent and folder.name.lower() == name.lower():
                    return folder.key
            new = folder_id()
            folders[new] = FakeFolder(new, new, name, parent)
            return new

    def remove(self, user: GraphUser, key: str) -> set[str]:
        """Delete the folder with this key and everything under it (a hard delete: its
        id answers 404 from then on). Returns the keys removed."""
        with self.lock:
            folders = self.folders(user)
            removed, pending = set(), [key]
            while pending:
                current = pending.pop()
                removed.add(current)
                pending += [f.key for f in folders.values() if f.parent == current]
            for gone in removed:
                folders.pop(gone, None)
            return removed

    def children(self, user: GraphUser, parent: str | None) -> list[FakeFolder]:
        with self.lock:
            return [f for f in self.folders(user).values() if f.parent == parent]

    def render(self, user: GraphUser, folder: FakeFolder) -> dict[str, Any]:
        with self.lock:
            folders = self.folders(user)
            parent = folders[folder.parent].id if folder.parent else self.root_ids[user.oid]
            children = sum(1 for f in folders.values() if f.parent == folder.key)
        items = [m for m in list(user.messages.values()) if m.folder == folder.key]
        return {
            "id": folder.id,
            "displayName": folder.name,
            "parentFolderId": parent,
            "childFolderCount": children,
            "unreadItemCount": len(items),
            "totalItemCount": len(items),
            "isHidden": folder.hidden,
        }
