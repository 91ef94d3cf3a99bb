"""Graph and EWS: a sync trusts a recent folder list, and lists again when it must.

Listing the folder tree (Graph: GET mailFolders and childFolders; EWS: FindFolder)
was a request of every push sync; the list is now kept in the cursor for
`FOLDER_LIST_KEPT` (worker.sync.folders.FolderReads). These check what that
must not cost: a reply a rule files in a folder made since is read by the next
sync; a folder deleted since is dropped without failing the sync; and the one
delay it allows (a new folder's news hidden by news in a known folder) ends
when the list is old. The real providers against the wire-faithful fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import update

from core.db import session_scope
from core.models import Mailbox
from tests.integration.provider_harness import ExchangeHarness, GraphHarness
from tests.integration.test_provider_contract import (
    inbound,
    mailbox_row,
    make_seller,
    send_first_step,
    state_of,
)
from worker.sync.engine import sync_mailbox
from worker.sync.folders import FOLDER_LIST_KEPT


@dataclass
class Tenant:
    """One provider's fake, as these tests use it."""

    harness: Any
    fake: Any
    listing: str  # the label of the call that lists the tree

    def listings(self) -> int:
        return int(self.fake.server.calls.count(lambda c: c.label == self.listing))

    def folder_id(self, address: str, path: str) -> str:
        key = self.fake.folder_key(address, path)
        if isinstance(self.harness, GraphHarness):
            return str(self.fake.folder_id(address, key))
        return str(self.fake.store.mailbox(address).folder_ids[key])


@pytest.fixture(params=["graph", "exchange"])
def tenant(request: pytest.FixtureRequest, env: Any) -> Tenant:
    if request.param == "graph":
        fake = request.getfixturevalue("fake_graph")
        return Tenant(GraphHarness(fake), fake, "mailFolders.list")
    fake = request.getfixturevalue("fake_ews")
    return Tenant(ExchangeHarness(fake), fake, "FindFolder")


def test_a_sync_trusts_a_recent_list_and_lists_again_when_it_finds_nothing_new(
    tenant: Tenant,
) -> None:
    seller = make_seller(tenant.harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    lee, lee_id = send_first_step(seller, "lee@globex.test")
    sync_mailbox(seller.mailbox_id)
    tenant.fake.server.calls.clear()

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
    tenant.fake.remove_folder(seller.address, "Old Projects")
    tenant.harness.deliver(seller.address, inbound("dana@acme.test", seller.address, dana_id))

    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert state_of(dana)[0] == "replied"
    cursor = mailbox_row(seller.mailbox_id).sync_cursor
    assert cursor is not None
    for gone in (projects, year):
        assert gone not in cursor["folders"] and gone not in cursor["listing"]["ids"]
    assert sync_mailbox(seller.mailbox_id).listed == 0
