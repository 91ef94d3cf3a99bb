"""Graph, EWS and IMAP: a sync trusts a recent folder list, and lists again when it must.

Listing the folder tree (Graph: GET mailFolders and childFolders; EWS: FindFolder;
IMAP: LIST) was a request of every push sync; the list is now kept in the cursor
for `FOLDER_LIST_KEPT` (worker.sync.folders.FolderReads). These check what that
must not cost: a reply a rule files in a folder made since is read by the next
sync; a folder deleted since is dropped without failing the sync; and the one
delay it allows (a new folder's news hidden by news in a known folder) ends
when the list is old. The real providers against the wire-faithful fakes, and
a real Dovecot (its LIST commands counted on the wire, through a relay).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import update

from core.db import session_scope
from core.models import Mailbox
from tests.integration.provider_harness import ExchangeHarness, GraphHarness, ImapHarness
from tests.integration.test_provider_contract import (
    inbound,
    mailbox_row,
    make_seller,
    send_first_step,
    state_of,
)
from tests.services.relay import TcpRelay
from worker.sync.engine import sync_mailbox
from worker.sync.folders import FOLDER_LIST_KEPT

_LIST = re.compile(rb"^\S+ LIST ", re.IGNORECASE)


class TappedImapHarness(ImapHarness):
    """Dovecot, reached through a relay that keeps the commands (LIST counted)."""

    def __init__(self, server: Any, smtp_server: Any, tap: TcpRelay) -> None:
        super().__init__(server, smtp_server)
        self.tap = tap

    def credentials(self, address: str) -> dict[str, Any]:
        credentials = super().credentials(address)
        credentials["imap"]["host"], credentials["imap"]["port"] = "127.0.0.1", self.tap.port
        return credentials


@dataclass
class Tenant:
    """One provider's fake (or Dovecot), as these tests use it."""

    harness: Any
    fake: Any
    listing: str  # the label of the call that lists the tree

    def listings(self) -> int:
        if isinstance(self.harness, TappedImapHarness):
            return sum(1 for line in self.harness.tap.client_lines() if _LIST.match(line))
        return int(self.fake.server.calls.count(lambda c: c.label == self.listing))

    def forget_calls(self) -> None:
        if isinstance(self.harness, TappedImapHarness):
            self.harness.tap.forget()
        else:
            self.fake.server.calls.clear()

    def folder_id(self, address: str, path: str) -> str:
        if isinstance(self.harness, TappedImapHarness):
            return path  # Dovecot's hierarchy separator here is "/"
        key = self.fake.folder_key(address, path)
        if isinstance(self.harness, GraphHarness):
            return str(self.fake.folder_id(address, key))
        return str(self.fake.store.mailbox(address).folder_ids[key])

    def remove_folder(self, address: str, path: str) -> None:
        """Delete the folder `path` and every folder under it, as a person does."""
        if not isinstance(self.harness, TappedImapHarness):
            self.fake.remove_folder(address, path)
            return
        with self.fake.imap(address) as client:
            # Deepest first; a parent made only by its child's name (\\NonExistent) is no folder.
            names = [
                str(n)
                for flags, _, n in client.list_folders()
                if not {f.lower() for f in flags} & {b"\\nonexistent", b"\\noselect"}
            ]
            for name in sorted(
                (n for n in names if n == path or n.startswith(f"{path}/")), key=len, reverse=True
            ):
                client.delete_folder(name)


@pytest.fixture(params=["graph", "exchange", "imap"])
def tenant(request: pytest.FixtureRequest, env: Any) -> Iterator[Tenant]:
    if request.param == "graph":
        fake = request.getfixturevalue("fake_graph")
        yield Tenant(GraphHarness(fake), fake, "mailFolders.list")
    elif request.param == "exchange":
        fake = request.getfixturevalue("fake_ews")
        yield Tenant(ExchangeHarness(fake), fake, "FindFolder")
    else:
        dovecot = request.getfixturevalue("dovecot")
        tap = TcpRelay((dovecot.host, dovecot.imap_port))
        try:
            harness = TappedImapHarness(dovecot, request.getfixturevalue("smtp_server"), tap)
            yield Tenant(harness, dovecot, "LIST")
        finally:
            tap.close()


def test_a_sync_trusts_a_recent_list_and_lists_again_when_it_finds_nothing_new(
    tenant: Tenant,
) -> None:
    seller = make_seller(tenant.harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    lee, lee_id = send_first_step(seller, "lee@globex.test")
    sync_mailbox(seller.mailbox_id)
    tenant.forget_calls()

    tenant.harness.deliver(seller.address, inbound("dana@acme.test", seller.address, dana_id))
    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert tenant.listings() == 0  # Inbox held the news: the kept list was enough
    assert state_of(dana)[0] == "replied"

    # A rule files Lee's answer in a folder made since: the folders known hold nothing
    # new, so the same sync lists the tree and reads the new folder.
    reply = inbound("lee@globex.test", seller.address, lee_id)
    tenant.harness.file_into(seller.address, reply, "Customers/Globex")
    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert tenant.listings() == 1 and state_of(lee)[0] == "replied"
    cursor = mailbox_row(seller.mailbox_id).sync_cursor
    assert cursor is not None
    globex = tenant.folder_id(seller.address, "Customers/Globex")
    assert globex in cursor["listing"]["ids"] and globex in cursor["folders"]
    assert sync_mailbox(seller.mailbox_id).listed == 0


def test_a_new_folder_that_news_elsewhere_hides_is_read_once_the_list_is_old(
    tenant: Tenant,
) -> None:
    seller = make_seller(tenant.harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    lunch = inbound("boss@acme.test", seller.address, subject="Lunch?")
    tenant.harness.deliver(seller.address, lunch)
    reply = inbound("dana@acme.test", seller.address, dana_id)
    tenant.harness.file_into(seller.address, reply, "Customers")
    assert sync_mailbox(seller.mailbox_id).listed == 1  # the lunch note; Customers is unknown
    assert state_of(dana)[0] == "active"

    cursor = mailbox_row(seller.mailbox_id).sync_cursor
    assert cursor is not None
    listed_at = datetime.fromisoformat(cursor["listing"]["at"])
    aged = {**cursor["listing"], "at": (listed_at - FOLDER_LIST_KEPT).isoformat()}
    with session_scope() as session:
        session.execute(
            update(Mailbox)
            .where(Mailbox.id == seller.mailbox_id)
            .values(sync_cursor={**cursor, "listing": aged})
        )
    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert state_of(dana)[0] == "replied"


def test_a_folder_deleted_since_it_was_listed_is_dropped_and_the_sync_goes_on(
    tenant: Tenant,
) -> None:
    seller = make_seller(tenant.harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    old_note = inbound("x@acme.test", seller.address)
    tenant.harness.file_into(seller.address, old_note, "Old Projects/2025")
    sync_mailbox(seller.mailbox_id)
    projects = tenant.folder_id(seller.address, "Old Projects")
    year = tenant.folder_id(seller.address, "Old Projects/2025")
    tenant.remove_folder(seller.address, "Old Projects")
    tenant.harness.deliver(seller.address, inbound("dana@acme.test", seller.address, dana_id))

    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert state_of(dana)[0] == "replied"
    cursor = mailbox_row(seller.mailbox_id).sync_cursor
    assert cursor is not None
    for gone in (projects, year):
        assert gone not in cursor["folders"] and gone not in cursor["listing"]["ids"]
    assert sync_mailbox(seller.mailbox_id).listed == 0


def test_an_imap_folder_that_is_now_only_a_parent_is_dropped_and_the_sync_goes_on(
    env: Any, dovecot: Any, smtp_server: Any
) -> None:
    # "Archive" was a folder when listed; renamed away, and a rule then files into
    # "Archive/2025": LIST shows "Archive" as a \NonExistent parent, SELECT refuses
    # it. That is a folder gone, not a server failing: the sync goes on.
    harness = ImapHarness(dovecot, smtp_server)
    seller = make_seller(harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    harness.file_into(seller.address, inbound("x@acme.test", seller.address), "Archive")
    sync_mailbox(seller.mailbox_id)
    with dovecot.imap(seller.address) as client:
        client.rename_folder("Archive", "Old Archive")
    reply = inbound("dana@acme.test", seller.address, dana_id)
    harness.file_into(seller.address, reply, "Archive/2025")
    with dovecot.imap(seller.address) as client:
        [(flags, _, _)] = client.list_folders("", "Archive")
    assert {f.lower() for f in flags} & {b"\\nonexistent", b"\\noselect"}, flags
    harness.deliver(seller.address, inbound("z@acme.test", seller.address, subject="Lunch?"))

    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert state_of(dana)[0] == "replied"
    cursor = mailbox_row(seller.mailbox_id).sync_cursor
    assert cursor is not None
    assert "Archive" not in cursor["folders"] and "Archive" not in cursor["listing"]["ids"]
    assert {"Old Archive", "Archive/2025"} <= set(cursor["listing"]["ids"])
