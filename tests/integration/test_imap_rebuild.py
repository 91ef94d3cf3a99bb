"""A real server renumbers a folder (new UIDVALIDITY) while the folder is open elsewhere.

The product owners' outside check saw Courier change UIDVALIDITY a minute after
connecting, with the listener's IDLE and a sync both in the folder. Here each
server does it its own real way, while an IDLE session (the listener's
`ImapProvider.watch`) holds the INBOX:

- Courier-IMAP loses its UID list (courierimapuiddb) and numbers afresh;
- GNU Mailutils finds its mbox rewritten without the X-IMAPbase/X-UID headers.

The sync must see the new UIDVALIDITY, re-list the rebuild window, and record
the reply that arrived meanwhile once, and the one it already had never again.
(Dovecot's own renumbering is tests/integration/test_imap_provider.py.)
PostgreSQL only: the database is not what differs here.
"""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from config import Settings
from core.db import session_scope
from core.models import InboundMessage
from tests.integration.provider_harness import ImapHarness
from tests.integration.test_provider_contract import (
    event_counts,
    inbound,
    mailbox_row,
    make_seller,
    send_first_step,
    state_of,
)
from tests.services.courier import CourierServer
from tests.services.mailutils import MailutilsServer
from worker.sync.engine import sync_mailbox
from worker.sync.imap import ImapProvider
from worker.sync.imap_folders import folder_states

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture(params=["courier", "mailutils"])
def harness(request: pytest.FixtureRequest) -> ImapHarness:
    server = request.getfixturevalue(request.param)
    return ImapHarness(server, request.getfixturevalue(f"{request.param}_smtp"))


def uidvalidity(mailbox_id: int) -> int:
    cursor = mailbox_row(mailbox_id).sync_cursor or {}
    return int(folder_states(cursor)["INBOX"]["uidvalidity"])


def test_a_folder_renumbered_under_an_open_idle_loses_no_reply_and_records_none_twice(
    env: Settings, harness: ImapHarness
) -> None:
    server = harness.server
    assert isinstance(server, CourierServer | MailutilsServer)
    seller = make_seller(harness)
    first, first_id = send_first_step(seller, "dana@acme.test")
    second, second_id = send_first_step(seller, "lee@globex.test")
    sync_mailbox(seller.mailbox_id)
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, first_id))
    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    numbered = uidvalidity(seller.mailbox_id)

    stop = threading.Event()
    listener = ImapProvider(seller.address, harness.credentials(seller.address))
    idle = threading.Thread(target=listener.watch, args=(stop, lambda: None), daemon=True)
    idle.start()
    try:
        server.renumber(seller.address)
        harness.deliver(seller.address, inbound("lee@globex.test", seller.address, second_id))
        stats = sync_mailbox(seller.mailbox_id)
    finally:
        stop.set()
        idle.join(timeout=5)
        listener.close()

    assert uidvalidity(seller.mailbox_id) != numbered  # the server really renumbered
    assert stats.outcomes == {"duplicate": 1, "recorded": 1}
    assert state_of(first)[0] == state_of(second)[0] == "replied"
    assert event_counts() == {"sent": 2, "reply": 2}
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessage)) == 2
    assert sync_mailbox(seller.mailbox_id).listed == 0  # numbered anew, nothing re-listed
