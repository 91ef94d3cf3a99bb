"""Which Microsoft 365 mail folders a Graph mailbox syncs: every one but the skipped.

A reply a rule filed in "Customers" must be seen, so `worker.sync.graph` reads
every mail folder with a delta link of its own, except the skipped ones
(`worker.sync.folders`: Sent Items, Drafts, Deleted Items, Junk Email by
default, plus Outbox, Conversation History and Sync Issues always) and everything under them.

Graph v1.0's mailFolder has no well-known-name property, so a skipped
well-known folder is found by asking for it by name (``GET
/me/mailFolders/sentitems?$select=id``): once per mailbox, its id is kept in
the cursor (``well_known``; "" when the mailbox has no such folder). A listing
reads the tree: ``GET /me/mailFolders`` (top level, paged by nextLink) and
``.../{id}/childFolders`` for each kept folder that has children. The sync
(`worker.sync.graph`) lists when the cursor's list is older than
`folders.FOLDER_LIST_KEPT`, and at once when the folders it knows hold nothing
new or one is gone, so a folder made since is read from then on::

    cursor = {"folders": {<folder id>: {"delta_link" | "next_link", "synced_at"}},
              "well_known": {"sentitems": <id>, ...},
              "listing": {"ids": [<folder id>, ...], "skip": [...], "at": <iso time>}}

Nothing here touches the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from worker.sync.base import ProviderError
from worker.sync.folders import exchange_skipped

FOLDER_SELECT = "id,displayName,childFolderCount"
FOLDER_PAGE = 100
MAX_FOLDERS = 1000  # a mailbox with more is read in its first thousand folders

Request = Callable[..., requests.Response]


@dataclass(frozen=True)
class GraphFolder:
    id: str
    name: str


def well_known_ids(request: Request, names: set[str], known: dict[str, str]) -> dict[str, str]:
    """The ids of the well-known folders in `names`: from `known`, else asked once each."""
    found = {n: known[n] for n in names if isinstance(known.get(n), str)}
    for name in sorted(names - set(found)):
        answer = request(
            "GET",
            f"/me/mailFolders/{name}?$select=id",
            f"opening the {name} folder",
            expect=(200, 404),
        )
        found[name] = str(answer.json().get("id") or "") if answer.status_code == 200 else ""
    return found


def watched_folders(
    request: Request, skip: tuple[str, ...], known: dict[str, str]
) -> tuple[list[GraphFolder], dict[str, str]]:
    """(the folders to read, the well-known ids to keep in the cursor)."""
    well_known, names = exchange_skipped(skip)
    ids = well_known_ids(request, well_known, known)
    skipped_ids = {i for i in ids.values() if i}
    kept: list[GraphFolder] = []
    pending = [f"/me/mailFolders?$select={FOLDER_SELECT}&$top={FOLDER_PAGE}"]
    while pending and len(kept) < MAX_FOLDERS:
        link: str | None = pending.pop(0)
        while link:
            page = request("GET", link, "listing mail folders").json()
            for row in page.get("value") or []:
                folder = GraphFolder(str(row.get("id") or ""), str(row.get("displayName") or ""))
                if not folder.id or folder.id in skipped_ids or folder.name.lower() in names:
                    continue  # skipped, and so is everything under it
                kept.append(folder)
                if int(row.get("childFolderCount") or 0) > 0:
                    pending.append(
                        f"/me/mailFolders/{quote(folder.id, safe='')}/childFolders"
                        f"?$select={FOLDER_SELECT}&$top={FOLDER_PAGE}"
                    )
            next_link = page.get("@odata.nextLink")
            link = next_link if isinstance(next_link, str) else None
    if not kept:
        raise ProviderError("Microsoft Graph listed no mail folder to read", permanent=True)
    return kept[:MAX_FOLDERS], ids


def legacy_inbox_cursor(state: dict[str, Any]) -> dict[str, Any] | None:
    """The Inbox delta state of a cursor written before every folder was read."""
    legacy: dict[str, Any] = {
        k: state[k] for k in ("delta_link", "next_link", "synced_at") if k in state
    }
    return legacy if ("delta_link" in legacy or "next_link" in legacy) else None
