"""After "Send now" the email's page says one true thing: sending now, then sent or waiting.

Never "Sending now." beside "Scheduled for <a time that has passed>". The send goes
through the real send job (RQ, real Redis) to the test SMTP server, which also
refuses a wrong password (the send then waits for the mailbox to be reconnected).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import Settings
from tests.conftest import create_user
from tests.integration.test_app_compose import add_mailbox, compose, run_send_jobs, server
from tests.integration.test_app_pages import signed_in
from tests.integration.test_feed import PASSWORD
from tests.services.dovecot import DovecotServer

pytestmark = pytest.mark.integration


def status_of(client: FlaskClient, location: str) -> tuple[str, str, str]:
    """The page's send status (its data-status and its words) and the whole page."""
    page = client.get(location).get_data(as_text=True)
    found = re.search(r'<dd data-status="([^"]*)"[^>]*>(.*?)</dd>', page, re.S)
    assert found is not None, page
    words = " ".join(re.sub(r"<[^>]+>", " ", found.group(2)).split())
    return found.group(1), words, page


def send_now(client: FlaskClient, mailbox_id: int, to: str) -> str:
    answer = compose(
        client, mailbox_id=str(mailbox_id), to=to, subject="Hello", body_html="<p>Hi.</p>"
    )
    assert answer.status_code == 302, answer.get_data(as_text=True)
    return str(answer.headers["Location"])


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_send_now_says_sending_then_sent_never_scheduled(
    env: Settings,
    app: Flask,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> None:
    sender, prospect = unique_address(prefix="rep"), unique_address()
    create_user(app, sender, "Sellers", "--password", PASSWORD)
    working = add_mailbox(
        sender,
        {
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
            "folders": ["INBOX"],
            "append_to_sent": False,
        },
    )
    client = signed_in(app, sender)

    location = send_now(client, working, prospect)
    phase, words, page = status_of(client, location)
    assert phase == "sending", words
    assert "Sending now" in words
    assert "Scheduled" not in page and "scheduled" not in words
    assert page.count("Sending now") == 1, "said twice (a flash beside the status)"
    assert "Cancel this email" not in page  # it is going: nothing to cancel
    assert '<meta http-equiv="refresh"' in page  # the page moves on by itself

    run_send_jobs()
    phase, words, page = status_of(client, location)
    assert phase == "sent", words
    assert "Sending now" not in page and "Scheduled" not in page
    assert '<meta http-equiv="refresh"' not in page


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_send_the_mailbox_refuses_says_it_waits_for_a_reconnect(
    env: Settings,
    app: Flask,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> None:
    sender, prospect = unique_address(prefix="rep"), unique_address()
    create_user(app, sender, "Sellers", "--password", PASSWORD)
    refused = add_mailbox(  # the SMTP server refuses this password: a send that cannot go
        sender,
        {
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, "not-the-password"),
            "folders": ["INBOX"],
            "append_to_sent": False,
        },
    )
    client = signed_in(app, sender)
    location = send_now(client, refused, prospect)
    assert status_of(client, location)[0] == "sending"
    run_send_jobs()
    phase, words, page = status_of(client, location)
    assert phase == "waiting", words
    assert words.startswith("waiting Not sent yet:") and "refused" in words, words
    assert "once the mailbox is reconnected" in words, words
    assert "Sending now" not in page and "Scheduled" not in page
