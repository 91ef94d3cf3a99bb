"""Microsoft 365: replies filed outside the Inbox are read, pushed, and the skipped stay unread.

The real provider (worker.sync.graph) against the fake Graph (tests.fakes.graph),
whose notifications reach our webhook through the Flask test client
(`graph_to_app`). The shared contract checks the plain case (a reply in
"Customers"); these check nesting, skipping, the push, and mailboxes that
were connected when Inbox alone was read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from config import Settings, queues
from core.db import session_scope
from core.models import Mailbox, MailboxPush, PushKind, utcnow
from tests.fakes.graph import FakeGraph
from tests.fakes.graph.store import Subscription
from tests.integration.provider_harness import GraphHarness, queued, run_jobs
from tests.integration.test_provider_contract import (
    inbound,
    mailbox_row,
    make_seller,
    send_first_step,
    state_of,
)
from tests.integration.test_provider_graph import _credentials, graph_to_app  # noqa: F401
from worker.sync.engine import SYNC_JOB, sync_mailbox
from worker.sync.graph import GraphProvider
from worker.sync.push import client_state, renew_push_job


def test_a_reply_in_a_nested_folder_is_pushed_and_read_and_skipped_folders_are_not(
    env: Settings,
    graph_to_app: FakeGraph,  # noqa: F811
) -> None:
    harness = GraphHarness(graph_to_app)
    seller = make_seller(harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    lee, lee_id = send_first_step(seller, "lee@globex.test")
    kim, kim_id = send_first_step(seller, "kim@initech.test")
    sync_mailbox(seller.mailbox_id)
    assert renew_push_job(seller.mailbox_id)["status"] == "renewed"
    graph_to_app.notifications.clear()

    # Answers in Junk Email and under Deleted Items are not read: never a reply there.
    graph_to_app.file_into(
        seller.address, inbound("lee@globex.test", seller.address, lee_id), "Junk Email"
    )
    deleted = inbound("kim@initech.test", seller.address, kim_id)
    graph_to_app.file_into(seller.address, deleted, "Deleted Items/Old")
    graph_to_app.file_into(
        seller.address, inbound("dana@acme.test", seller.address, dana_id), "Customers/Acme"
    )
    assert graph_to_app.wait_notified()
    assert [n.status for n in graph_to_app.notifications] == [202, 202, 202]
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
    run_jobs(queues.SYNC)

    assert state_of(dana) == ("replied", "reply from dana@acme.test")
    assert state_of(lee)[0] == "active" and state_of(kim)[0] == "active"
    folders = mailbox_row(seller.mailbox_id).sync_cursor["folders"]  # type: ignore[index]
    acme = graph_to_app.app.folders.folders(graph_to_app.store.user(seller.address))
    acme_id = acme[graph_to_app.folder_key(seller.address, "Customers/Acme")].id
    assert acme_id in folders and acme["junkemail"].id not in folders
    assert acme["sentitems"].id not in folders and acme["inbox"].id in folders


def test_a_mailbox_skips_the_folders_it_names(env: Settings, fake_graph: FakeGraph) -> None:
    harness = GraphHarness(fake_graph)
    seller = make_seller(harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    with session_scope() as session:  # as the API and the mailboxes page set it
        session.execute(
            update(Mailbox)
            .where(Mailbox.id == seller.mailbox_id)
            .values(skip_folders=["Sent", "Drafts", "Trash", "Junk", "customers"])
        )
    fake_graph.file_into(
        seller.address, inbound("dana@acme.test", seller.address, dana_id), "Customers"
    )
    stats = sync_mailbox(seller.mailbox_id)
    assert (stats.listed, state_of(dana)[0]) == (0, "active")
    fake_graph.file_into(
        seller.address, inbound("dana@acme.test", seller.address, dana_id), "Prospects"
    )
    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}


def test_a_cursor_from_inbox_only_days_goes_on_and_the_other_folders_are_read(
    env: Settings, fake_graph: FakeGraph
) -> None:
    harness = GraphHarness(fake_graph)
    seller = make_seller(harness)
    dana, dana_id = send_first_step(seller, "dana@acme.test")
    lee, lee_id = send_first_step(seller, "lee@globex.test")
    harness.deliver(seller.address, inbound("boss@acme.test", seller.address, subject="Lunch?"))
    sync_mailbox(seller.mailbox_id)
    cursor = mailbox_row(seller.mailbox_id).sync_cursor
    assert cursor is not None
    user = fake_graph.store.user(seller.address)
    inbox_id = fake_graph.app.folders.folders(user)["inbox"].id
    # What a mailbox synced before this change holds: Inbox's delta link at the top.
    legacy = {**cursor["folders"][inbox_id]}
    with session_scope() as session:
        session.execute(
            update(Mailbox).where(Mailbox.id == seller.mailbox_id).values(sync_cursor=legacy)
        )
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, dana_id))
    harness.file_into(
        seller.address, inbound("lee@globex.test", seller.address, lee_id), "Customers"
    )

    stats = sync_mailbox(seller.mailbox_id)
    # Inbox goes on from its link (the lunch note is not listed again); Customers is new.
    assert (stats.listed, stats.outcomes) == (2, {"recorded": 2})
    assert state_of(dana)[0] == "replied" and state_of(lee)[0] == "replied"
    assert sync_mailbox(seller.mailbox_id).listed == 0


def test_a_subscription_made_on_inbox_alone_is_replaced_on_renewal(
    env: Settings,
    graph_to_app: FakeGraph,  # noqa: F811
) -> None:
    harness = GraphHarness(graph_to_app)
    seller = make_seller(harness)
    old = Subscription(
        id="0f6b1c2e-old-inbox",
        email=seller.address,
        resource="me/mailFolders('Inbox')/messages",
        change_type="created",
        notification_url="https://sightline.test/webhooks/graph",
        client_state=client_state(seller.mailbox_id),
        expiration=datetime.now(UTC) + timedelta(hours=3),
    )
    graph_to_app.store.subscriptions[old.id] = old
    with session_scope() as session:
        session.add(
            MailboxPush(
                mailbox_id=seller.mailbox_id,
                kind=PushKind.GRAPH_SUBSCRIPTION,
                external_id=old.id,
                expires_at=utcnow() + timedelta(hours=3),
            )
        )
    assert renew_push_job(seller.mailbox_id)["status"] == "renewed"
    [now] = graph_to_app.subscriptions(seller.address)
    assert now.id != old.id and now.resource == "me/messages"


def test_a_push_sync_hands_every_folder_over_in_one_batch(
    env: Settings, fake_graph: FakeGraph
) -> None:
    # Each batch costs the engine a transaction and a cursor write: a sync that reads
    # Inbox, Archive and Customers for two new messages hands them over together.
    harness = GraphHarness(fake_graph)
    seller = make_seller(harness)
    fake_graph.file_into(seller.address, inbound("x@acme.test", seller.address), "Customers")
    sync_mailbox(seller.mailbox_id)
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address))
    fake_graph.file_into(seller.address, inbound("lee@globex.test", seller.address), "Customers")
    cursor = mailbox_row(seller.mailbox_id).sync_cursor

    provider = GraphProvider(seller.address, _credentials(seller.mailbox_id))
    [batch] = provider.changes(cursor, utcnow() - timedelta(days=1))

    assert sorted(m.from_addr or "" for m in batch.messages) == [
        "dana@acme.test",
        "lee@globex.test",
    ]
    assert set(batch.cursor["folders"]) == set(cursor["folders"])  # type: ignore[index]
    [again] = provider.changes(batch.cursor, utcnow())
    assert again.messages == []
