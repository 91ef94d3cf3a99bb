"""Our copy of a sent message lands in the user's Sent folder, or the mailbox page says why not.

On Courier-IMAP (the server the outside check met) with Debian's defaults: its
folders live under INBOX., so the provider must find or make INBOX.Sent. A
mailbox set up to file into a top-level "Sent" (as a user might have typed it)
meets Courier's "Invalid mailbox name": the message still goes out, and the
reason shows on the mailboxes page and in the API until a copy is filed again.
PostgreSQL only: the database is not what differs here.
"""

from __future__ import annotations

import html

import pytest
from flask import Flask
from flask.testing import FlaskClient

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Mailbox
from tests.conftest import ApiClient, create_user
from tests.integration.provider_harness import ImapHarness
from tests.integration.test_provider_contract import make_seller, send_first_step
from tests.integration.test_provider_pages import CSRF, PASSWORD, row_of
from tests.services.courier import CourierServer
from tests.services.imap_server import has_message_id
from tests.services.smtp import SmtpServer

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def sign_in(app: Flask, client: FlaskClient) -> ApiClient:
    """The team's owner, signed in to the pages, with an API token too."""
    token = create_user(app, "owner@team-a.test", "Team A", "--password", PASSWORD)
    csrf = CSRF.search(client.get("/signin").get_data(as_text=True))
    assert csrf is not None
    form = {"email": "owner@team-a.test", "password": PASSWORD, "csrf_token": csrf.group(1)}
    assert client.post("/signin", data=form).status_code == 302
    return ApiClient(client, token)


def shown(client: FlaskClient, mailbox_id: int) -> str:
    """The mailbox's row on the page, as text a person reads (one space between words)."""
    row = row_of(client.get("/mailboxes").get_data(as_text=True), mailbox_id)
    return " ".join(html.unescape(row).split())


def file_copies_in(mailbox_id: int, harness: ImapHarness, address: str, folder: str | None) -> None:
    credentials = harness.credentials(address)
    if folder is not None:
        credentials["sent_folder"] = folder
    with session_scope() as session:
        session.get_one(Mailbox, mailbox_id).credentials_encrypted = encrypt_json(credentials)


def test_a_copy_that_cannot_be_filed_is_shown_until_one_is(
    env: Settings,
    app: Flask,
    client: FlaskClient,
    courier: CourierServer,
    courier_smtp: SmtpServer,
) -> None:
    api = sign_in(app, client)
    harness = ImapHarness(courier, courier_smtp)
    seller = make_seller(harness, team_name="Team A")

    # Found by meaning: Courier's INBOX.Sent, made on first use.
    _, first_id = send_first_step(seller, "dana@acme.test")
    courier.wait_for_message(seller.address, has_message_id(first_id), folder="INBOX.Sent")

    file_copies_in(seller.mailbox_id, harness, seller.address, folder="Sent")
    _, second_id = send_first_step(seller, "lee@globex.test")
    courier.wait_for_message("lee@globex.test", has_message_id(second_id))  # it went out
    row = shown(client, seller.mailbox_id)
    assert "Sent mail is not filed in your Sent folder" in row
    assert "Invalid mailbox name" in row
    listed = api.get("/api/v1/mailboxes").get_json()
    mailbox = next(m for m in listed["mailboxes"] if m["id"] == seller.mailbox_id)
    assert "Invalid mailbox name" in mailbox["sent_copy_error"]

    file_copies_in(seller.mailbox_id, harness, seller.address, folder=None)
    _, third_id = send_first_step(seller, "kim@initech.test")
    courier.wait_for_message(seller.address, has_message_id(third_id), folder="INBOX.Sent")
    assert "not filed" not in shown(client, seller.mailbox_id)
