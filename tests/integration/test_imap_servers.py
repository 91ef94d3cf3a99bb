"""The other real IMAP servers behave as the suite relies on: Courier-IMAP and GNU Mailutils.

Each test fails if its server misbehaves the way a test would not notice
otherwise: mail that does not arrive through the SMTP server, or arrives with
another Message-ID; a server that is not the server the product owners' check
met (Courier's INBOX. namespace that refuses a top-level Sent; Mailutils without
any Sent); a server left running after it is stopped.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from imapclient.exceptions import IMAPClientError

from tests.services import process
from tests.services.courier import CourierServer
from tests.services.imap_server import ImapTestServer, has_message_id, unique_address
from tests.services.mailutils import MailutilsServer
from tests.services.smtp import SmtpServer

pytestmark = pytest.mark.integration

SERVERS = ["courier", "mailutils"]


@pytest.fixture(params=SERVERS)
def served(request: pytest.FixtureRequest) -> tuple[ImapTestServer, SmtpServer]:
    server: ImapTestServer = request.getfixturevalue(request.param)
    smtp: SmtpServer = request.getfixturevalue(f"{request.param}_smtp")
    return server, smtp


def note(author: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = author, to, "Hello"
    msg["Message-ID"] = make_msgid(domain="acme.test")
    msg.set_content("Hello there\n")
    return msg


def test_smtp_delivers_into_the_server_with_the_same_message_id(
    served: tuple[ImapTestServer, SmtpServer],
) -> None:
    server, smtp = served
    author, rcpt = unique_address("acme.test", "dana"), unique_address("seller.test", "rep")
    msg = note(author, rcpt)
    with smtp.connect(login=author) as client:
        client.send_message(msg)
    got = server.wait_for_message(rcpt, has_message_id(msg["Message-ID"]))
    assert got["Subject"] == "Hello"
    assert [e.message_id for e in smtp.sent_to(rcpt)] == [msg["Message-ID"]]


def test_courier_is_the_server_that_refuses_a_top_level_sent(courier: CourierServer) -> None:
    user = unique_address("seller.test", "rep")
    with courier.imap(user) as client:
        assert client.namespace().personal == (("INBOX.", "."),)
        assert b"IDLE" in client.capabilities()
        assert b"SPECIAL-USE" not in client.capabilities()
        with pytest.raises(IMAPClientError, match="Invalid mailbox name"):
            client.create_folder("Sent")
        client.create_folder("INBOX.Sent")
        assert "INBOX.Sent" in [name for _, _, name in client.list_folders()]


def test_mailutils_has_no_sent_folder_and_a_flat_namespace(mailutils: MailutilsServer) -> None:
    user = unique_address("seller.test", "rep")
    with mailutils.imap(user) as client:
        assert client.namespace().personal == (("", "/"),)
        assert [name for _, _, name in client.list_folders()] == ["INBOX"]


@pytest.mark.parametrize("kind", [CourierServer, MailutilsServer])
def test_stopping_a_server_ends_every_process_it_started(
    kind: type[CourierServer] | type[MailutilsServer],
) -> None:
    server = kind().start()
    group = server._proc.pid if server._proc else 0
    with server.imap(unique_address("seller.test", "rep")):
        pass  # a login forks a per-connection process (and Courier's authdaemond runs)
    server.stop()
    assert process.living_in_group(group) == []
