"""The fake Exchange mailbox's folder tree, in EWS's shapes.

Facts modelled (EWS reference: FindFolder, Folder, CalendarFolder; [MS-OXOSFLD]):

- Under msgfolderroot ("Top of Information Store") sit the default folders
  (Inbox, Drafts, Sent Items, Deleted Items, Junk Email, Outbox, Calendar)
  and what a person made; a folder made inside another sits under it.
- FindFolder with Traversal="Shallow" lists a folder's children, "Deep" the
  whole subtree, paged by IndexedPageFolderView (Offset, MaxEntriesReturned).
- A folder is ``<t:Folder>`` (a calendar ``<t:CalendarFolder>``) with FolderId,
  ParentFolderId, FolderClass (IPF.Note for mail, IPF.Appointment for a
  calendar), DisplayName, TotalCount, ChildFolderCount, UnreadCount. FindFolder
  names no DistinguishedFolderId: a client tells Sent Items by asking for it.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from .store import EwsMailbox

DISPLAY = {
    "root": "Root",
    "msgfolderroot": "Top of Information Store",
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "drafts": "Drafts",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "outbox": "Outbox",
    "calendar": "Calendar",
}


def parent_of(mailbox: EwsMailbox, key: str) -> str | None:
    if key == "root":
        return None
    if key == "msgfolderroot":
        return "root"
    return mailbox.folder_parents.get(key, "msgfolderroot")


def subfolders(mailbox: EwsMailbox, parent: str, *, deep: bool) -> list[str]:
    """The keys of `parent`'s children (and, `deep`, their children), parents first."""
    keys = [k for k in mailbox.folder_ids if k not in ("root", "msgfolderroot")]
    if parent == "root":
        keys.insert(0, "msgfolderroot")
    found: list[str] = []
    for key in keys:
        if parent_of(mailbox, key) == parent:
            found.append(key)
            if deep:
                found.extend(subfolders(mailbox, key, deep=True))
    return found


def folder_xml(mailbox: EwsMailbox, key: str) -> str:
    parent = parent_of(mailbox, key)
    parent_xml = (
        f'<t:ParentFolderId Id="{mailbox.folder_ids[parent]}" ChangeKey="AQAAAA=="/>'
        if parent
        else ""
    )
    count = sum(1 for i in mailbox.items.values() if i.folder == key)
    children = len(subfolders(mailbox, key, deep=False))
    tag, folder_class = (
        ("CalendarFolder", "IPF.Appointment")
        if key == "calendar"
        else (
            "Folder",
            "IPF.Note",
        )
    )
    name = DISPLAY.get(key) or mailbox.folder_names.get(key, key)
    unread = f"<t:UnreadCount>{count}</t:UnreadCount>" if tag == "Folder" else ""
    return (
        f'<t:{tag}><t:FolderId Id="{mailbox.folder_ids[key]}" ChangeKey="AQAAAA=="/>'
        f"{parent_xml}<t:FolderClass>{folder_class}</t:FolderClass>"
        f"<t:DisplayName>{escape(name)}</t:DisplayName>"
        f"<t:TotalCount>{count}</t:TotalCount><t:ChildFolderCount>{children}</t:ChildFolderCount>"
        f"{unread}</t:{tag}>"
    )
