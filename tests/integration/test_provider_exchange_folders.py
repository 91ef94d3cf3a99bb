"""Exchange (EWS): replies filed outside the Inbox are streamed and synced; skipped ones are not.

exchangelib talks SOAP to the fake Exchange (tests.fakes.ews), whose FindFolder
lists the folder tree (a Calendar among the mail folders) and whose streaming
subscriptions report items created in any folder they were made on.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import update

from config import Settings
from core.db import session_scope
from core.models import Mailbox
from tests.fakes.ews import FakeEws
from tests.integration.provider_harness import ExchangeHarness
from tests.integration.test_provider_contract import (
    inbound,
    mailbox_row,
    make_seller,
    send_first_step,
    state_of,
)
from worker.sync.engine import sync_mailbox
from worker.sync.exchange import ExchangeProvider


def test_the_stream_reports_a_reply_filed_in_a_nested_folder_and_the_sync_reads_it(
    env: Settings, fake_ews: FakeEws
) -> None:
    harness = ExchangeHarness(fake_ews)
    seller = make_seller(harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    lee, lee_id = send_first_step(seller, "lee@globex.test")
    sync_mailbox(seller.mailbox_id)
    acme = fake_ews.folder_key(seller.address, "Customers/Acme")  # the rule's folder
    provider = ExchangeProvider(seller.address, harness.credentials(seller.address))
    stop = threading.Event()
    woke: list[float] = []
    watcher = threading.Thread(
        target=provider.watch, args=(stop, lambda: woke.append(time.monotonic()))
    )
    watcher.start()
    try:
        deadline = time.monotonic() + 5
        while not fake_ews.store.subscriptions and time.monotonic() < deadline:
            time.sleep(0.02)
        [subscription] = fake_ews.store.subscriptions.values()
        assert {"inbox", acme} <= subscription.folders and "sentitems" not in subscription.folders
        assert "calendar" not in subscription.folders and "junkemail" not in subscription.folders
        time.sleep(0.3)  # GetStreamingEvents is open
        # Lee's answer in Junk Email is not streamed, nor read: never a reply there.
        harness.file_into(
            seller.address, inbound("lee@globex.test", seller.address, lee_id), "Junk Email"
        )
        time.sleep(0.5)
        assert woke == []
        filed = time.monotonic()
        reply = inbound("dana@acme.test", seller.address, dana_id)
        harness.file_into(seller.address, reply, "Customers/Acme")
        while not woke and time.monotonic() < filed + 5:
            time.sleep(0.02)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert woke and woke[0] - filed < 2.0
    stats = sync_mailbox(seller.mailbox_id)
    assert stats.outcomes == {"recorded": 1}
    assert state_of(dana)[0] == "replied" and state_of(lee)[0] == "active"
    folders = mailbox_row(seller.mailbox_id).sync_cursor["folders"]  # type: ignore[index]
    mailbox = fake_ews.store.mailbox(seller.address)
    assert mailbox is not None
    assert acme in folders and mailbox.folder_ids["inbox"] in folders
    assert mailbox.folder_ids["calendar"] not in folders
    assert mailbox.folder_ids["sentitems"] not in folders


def test_a_cursor_from_inbox_only_days_goes_on_and_the_other_folders_are_read(
    env: Settings, fake_ews: FakeEws
) -> None:
    harness = ExchangeHarness(fake_ews)
    seller = make_seller(harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    lee, lee_id = send_first_step(seller, "lee@globex.test")
    harness.deliver(seller.address, inbound("boss@acme.test", seller.address, subject="Lunch?"))
    sync_mailbox(seller.mailbox_id)
    cursor = mailbox_row(seller.mailbox_id).sync_cursor
    mailbox = fake_ews.store.mailbox(seller.address)
    assert cursor is not None and mailbox is not None
    # What a mailbox synced before this change holds: Inbox's sync state at the top.
    legacy = {**cursor["folders"][mailbox.folder_ids["inbox"]]}
    with session_scope() as session:
        session.execute(
            update(Mailbox).where(Mailbox.id == seller.mailbox_id).values(sync_cursor=legacy)
        )
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, dana_id))
    reply = inbound("lee@globex.test", seller.address, lee_id)
    harness.file_into(seller.address, reply, "Customers")

    stats = sync_mailbox(seller.mailbox_id)
    # Inbox goes on from its state (the lunch note is not listed again); Customers is new.
    assert (stats.listed, stats.outcomes) == (2, {"recorded": 2})
    assert state_of(dana)[0] == "replied" and state_of(lee)[0] == "replied"
    assert sync_mailbox(seller.mailbox_id).listed == 0
