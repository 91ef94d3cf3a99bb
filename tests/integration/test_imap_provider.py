"""The IMAP/SMTP provider against a real Dovecot and a real SMTP server."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest

from tests.services.dovecot import DovecotServer, has_message_id, unique_address
from worker.sync.base import OutgoingMessage, ProviderError
from worker.sync.imap import ImapProvider
from worker.sync.imap_folders import folder_states
from worker.sync.mime import new_message_id


def credentials(
    dovecot: DovecotServer, smtp_server: Any, user: str, **extra: Any
) -> dict[str, Any]:
    return {
        "imap": {
            "host": dovecot.host,
            "port": dovecot.imap_port,
            "username": user,
            "password": dovecot.password,
            "security": "none",
        },
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "username": user,
            "password": smtp_server.password,
            "security": "none",
        },
        **extra,
    }


def inbound(author: str, to: str, in_reply_to: str | None = None, subject: str = "Hello") -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="acme.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = f"<older@acme.test> {in_reply_to}"
    msg.set_content("Hello there\n")
    return msg.as_bytes()


@pytest.fixture
def sender(dovecot: DovecotServer) -> str:
    return unique_address("seller.test", "rep")


def test_send_delivers_the_exact_message_id_and_files_a_copy(
    dovecot: DovecotServer, smtp_server: Any, sender: str
) -> None:
    prospect = unique_address()
    provider = ImapProvider(sender, credentials(dovecot, smtp_server, sender))
    message_id = new_message_id(sender)
    result = provider.send(
        OutgoingMessage(
            from_addr=sender,
            from_name="Rep",
            to=[prospect],
            subject="Quick question",
            html="<p>Hi <b>Dana</b></p>",
            text="Hi Dana\n",
            message_id=message_id,
            in_reply_to="<earlier@seller.test>",
            references=["<earlier@seller.test>"],
        )
    )
    assert result.message_id == message_id
    received = dovecot.wait_for_message(prospect, has_message_id(message_id))
    assert received["In-Reply-To"] == "<earlier@seller.test>"
    assert received["Subject"] == "Quick question"
    html_part = received.get_body(("html",))
    assert html_part is not None
    assert html_part.get_content().strip() == "<p>Hi <b>Dana</b></p>"
    assert dovecot.wait_for_message(sender, has_message_id(message_id), folder="Sent")
    assert provider.find_sent(message_id) is not None
    assert provider.find_sent("<never-sent@seller.test>") is None
    provider.close()


def test_changes_lists_headers_then_only_new_mail(
    dovecot: DovecotServer, smtp_server: Any, sender: str
) -> None:
    ours = "<ours.1@seller.test>"
    dovecot.deliver(sender, inbound("dana@acme.test", sender, in_reply_to=ours))
    dovecot.deliver(sender, inbound("news@shop.test", sender))
    provider = ImapProvider(sender, credentials(dovecot, smtp_server, sender))
    since = datetime.now(UTC) - timedelta(days=1)
    batches = list(provider.changes(None, since))
    listed = [m for b in batches for m in b.messages]
    assert len(listed) == 2
    reply = next(m for m in listed if m.from_addr == "dana@acme.test")
    assert reply.candidates == [ours, "<older@acme.test>"]
    assert reply.provider_id == f"mid:{reply.rfc_message_id}"
    assert b"Hello there" not in repr(reply).encode()  # headers only
    assert b"Hello there" in provider.fetch(reply.fetch_ref, 1_000_000)
    assert len(provider.fetch(reply.fetch_ref, 100)) == 100  # never more than asked
    cursor = batches[-1].cursor
    assert folder_states(cursor)["INBOX"]["last_uid"] == 2
    assert [m for b in provider.changes(cursor, since) for m in b.messages] == []
    dovecot.deliver(sender, inbound("dana@acme.test", sender, in_reply_to=ours))
    fresh = [m for b in provider.changes(cursor, since) for m in b.messages]
    assert len(fresh) == 1
    provider.close()


def test_a_flat_cursor_from_before_the_kept_list_goes_on_where_it_stopped(
    dovecot: DovecotServer, smtp_server: Any, sender: str
) -> None:
    # Cursors written before the folder list was kept are {folder: state} at the top
    # (any folder name, "shape" and "folders" too): read as such, never listed again.
    dovecot.deliver(sender, inbound("old@acme.test", sender))
    provider = ImapProvider(sender, credentials(dovecot, smtp_server, sender))
    since = datetime.now(UTC) - timedelta(days=1)
    states = folder_states([b for b in provider.changes(None, since)][-1].cursor)
    flat = {"INBOX": states["INBOX"], "folders": {"uidvalidity": 1, "last_uid": 9}}
    assert folder_states(flat) is flat
    dovecot.deliver(sender, inbound("new@acme.test", sender))
    batches = list(provider.changes(flat, since))
    assert [m.from_addr for b in batches for m in b.messages] == ["new@acme.test"]
    cursor = batches[-1].cursor
    assert cursor["shape"] == "folders" and cursor["listing"]["ids"] == ["INBOX"]
    assert folder_states(cursor)["INBOX"]["last_uid"] == states["INBOX"]["last_uid"] + 1
    provider.close()


def test_uidvalidity_change_rebuilds_with_the_same_identities(
    dovecot: DovecotServer, smtp_server: Any, sender: str
) -> None:
    with dovecot.imap(sender) as client:
        client.create_folder("Replies")
        client.append("Replies", inbound("dana@acme.test", sender, in_reply_to="<x@seller.test>"))
    provider = ImapProvider(sender, credentials(dovecot, smtp_server, sender, folders=["Replies"]))
    since = datetime.now(UTC) - timedelta(days=1)
    first = [b for b in provider.changes(None, since)]
    ids = [m.provider_id for b in first for m in b.messages]
    cursor = first[-1].cursor
    with dovecot.imap(sender) as client:
        client.select_folder("Replies")
        raw = client.fetch([1], ["BODY.PEEK[]"])[1][b"BODY[]"]
        client.unselect_folder()
        client.delete_folder("Replies")
        time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock, in seconds
        client.create_folder("Replies")
        client.append("Replies", raw)
    rebuilt = list(provider.changes(cursor, since))
    now, before = folder_states(rebuilt[-1].cursor), folder_states(cursor)
    assert now["Replies"]["uidvalidity"] != before["Replies"]["uidvalidity"]
    assert [m.provider_id for b in rebuilt for m in b.messages] == ids
    provider.close()


def test_refused_login_asks_for_a_reconnect(
    dovecot: DovecotServer, smtp_server: Any, sender: str
) -> None:
    creds = credentials(dovecot, smtp_server, sender)
    creds["imap"]["password"] = "wrong"
    with pytest.raises(ProviderError) as raised:
        ImapProvider(sender, creds).verify()
    assert raised.value.needs_reconnect
    creds = credentials(dovecot, smtp_server, sender)
    creds["smtp"]["password"] = "wrong"
    with pytest.raises(ProviderError) as raised:
        ImapProvider(sender, creds).verify()
    assert raised.value.needs_reconnect
    ImapProvider(sender, credentials(dovecot, smtp_server, sender)).verify()


def test_idle_wakes_up_on_new_mail(dovecot: DovecotServer, smtp_server: Any, sender: str) -> None:
    provider = ImapProvider(sender, credentials(dovecot, smtp_server, sender))
    stop = threading.Event()
    woke: list[float] = []
    watcher = threading.Thread(
        target=provider.watch, args=(stop, lambda: woke.append(time.monotonic()))
    )
    watcher.start()
    time.sleep(0.5)
    delivered = time.monotonic()
    dovecot.deliver(sender, inbound("dana@acme.test", sender))
    deadline = time.monotonic() + 5
    while not woke and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    watcher.join(timeout=5)
    provider.close()
    assert woke, "IDLE did not report the delivery"
    assert woke[0] - delivered < 2.0
    assert not watcher.is_alive()
