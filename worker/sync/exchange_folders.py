"""Which folders an Exchange (EWS) mailbox syncs and streams: every mail folder but the skipped.

A reply a rule filed in "Customers" must be seen, so `worker.sync.exchange`
syncs every mail folder under msgfolderroot (FindFolder, Traversal Deep: one
call a listing; the sync lists when its kept list is old or the folders it
knows held nothing new, `folders.FolderReads`, so a folder made since is read
from then on) except the skipped
ones (`worker.sync.folders`: Sent Items, Drafts, Deleted Items, Junk Email by
default, Outbox, Conversation History and Sync Issues always) and everything under them.
Calendars, contacts and tasks (a FolderClass other than IPF.Note…) hold no mail.

FindFolder does not say which folder is Sent Items, so the skipped
distinguished folders are asked for by their distinguished ids (one GetFolder
for all of them) once per mailbox; their ids are kept in the cursor
(``well_known``; "" for one the server does not have). XML is read here, not
by exchangelib's folder classes, which would first fetch the root folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from exchangelib import Account
from exchangelib.fields import FieldPath
from exchangelib.folders import Folder
from exchangelib.properties import DistinguishedFolderId
from exchangelib.properties import Mailbox as ExchangeMailbox
from exchangelib.services import FindFolder, GetFolder
from exchangelib.util import TNS

from worker.sync.exchange_errors import ews_call
from worker.sync.folders import exchange_skipped

MAX_FOLDERS = 1000


@dataclass(frozen=True)
class ExchangeFolder:
    id: str
    name: str
    folder_class: str
    parent_id: str


def _folder(elem: Any) -> ExchangeFolder | Exception:
    if isinstance(elem, Exception):
        return elem
    folder_id = elem.find(f"{{{TNS}}}FolderId")
    parent = elem.find(f"{{{TNS}}}ParentFolderId")
    return ExchangeFolder(
        id=folder_id.get("Id", "") if folder_id is not None else "",
        name=elem.findtext(f"{{{TNS}}}DisplayName") or "",
        folder_class=elem.findtext(f"{{{TNS}}}FolderClass") or "",
        parent_id=parent.get("Id", "") if parent is not None else "",
    )


class _FindFolder(FindFolder):  # type: ignore[misc]
    """FindFolder from a distinguished folder, its answer read as plain folders."""

    def call(self, folders: list[Any], additional_fields: Any, depth: str) -> Iterator[Any]:
        found: Iterator[Any] = self._elems_to_objs(
            self._paged_call(
                payload_func=self.get_payload,
                max_items=MAX_FOLDERS,
                folders=folders,
                additional_fields=additional_fields,
                restriction=None,
                shape="IdOnly",
                depth=depth,
                page_size=self.page_size,
                offset=0,
            )
        )
        return found

    def _elem_to_obj(self, elem: Any) -> ExchangeFolder | Exception:
        return _folder(elem)


class _GetFolder(GetFolder):  # type: ignore[misc]
    """GetFolder of distinguished folders, read as plain folders (errors stay errors)."""

    def _elems_to_objs(self, elems: Any) -> Iterator[ExchangeFolder | Exception]:
        for elem in elems:
            yield _folder(elem)


def _fields() -> list[Any]:
    return [
        FieldPath(field=Folder.get_field_by_fieldname(name))
        for name in ("name", "folder_class", "parent_folder_id")
    ]


def distinguished(account: Account, name: str) -> DistinguishedFolderId:
    return DistinguishedFolderId(
        id=name, mailbox=ExchangeMailbox(email_address=account.primary_smtp_address)
    )


def well_known_ids(account: Account, names: set[str], known: dict[str, str]) -> dict[str, str]:
    """The ids of the distinguished folders in `names`: from `known`, else one GetFolder."""
    found = {n: known[n] for n in names if isinstance(known.get(n), str)}
    wanted = sorted(names - set(found))
    if wanted:
        answers = ews_call(
            "opening the skipped folders",
            lambda: list(
                _GetFolder(account=account).call(
                    folders=[distinguished(account, n) for n in wanted],
                    additional_fields=[],
                    shape="IdOnly",
                )
            ),
        )
        for name, answer in zip(wanted, answers, strict=False):
            found[name] = answer.id if isinstance(answer, ExchangeFolder) else ""
    return found


def watched_folders(
    account: Account, skip: tuple[str, ...], known: dict[str, str]
) -> tuple[list[ExchangeFolder], dict[str, str]]:
    """(the mail folders to sync, the distinguished ids to keep in the cursor)."""
    well_known, names = exchange_skipped(skip)
    ids = well_known_ids(account, well_known | {"inbox"}, known)
    skipped = {i for n, i in ids.items() if i and n != "inbox"}
    found = ews_call(
        "listing folders",
        lambda: list(
            _FindFolder(account=account).call(
                folders=[distinguished(account, "msgfolderroot")],
                additional_fields=_fields(),
                depth="Deep",
            )
        ),
    )
    folders = [f for f in found if isinstance(f, ExchangeFolder) and f.id]
    parents = {f.id: f.parent_id for f in folders}
    skipped |= {f.id for f in folders if f.name.lower() in names}
    kept = [
        f
        for f in folders
        if not _under(f.id, skipped, parents)
        # a calendar, contacts, tasks: no mail there
        and (not f.folder_class or f.folder_class.upper().startswith("IPF.NOTE"))
    ]
    return kept, ids


def _under(folder_id: str, skipped: set[str], parents: dict[str, str]) -> bool:
    """Whether `folder_id` is a skipped folder or inside one."""
    seen: set[str] = set()
    while folder_id and folder_id not in seen:
        if folder_id in skipped:
            return True
        seen.add(folder_id)
        folder_id = parents.get(folder_id, "")
    return False
