"""Connecting an IMAP mailbox from the web app, against the real Dovecot and SMTP servers.

The form at `/mailboxes/imap` and `POST /api/v1/mailboxes` share one code path
(`worker.sync.connecting.connect_imap`): both log in to IMAP and SMTP before saving, and
store the credentials encrypted. Here a salesperson fills the form: a wrong
password is refused by the server named in the message, the password is never
shown back, nothing is saved; a server that cannot log in for now is told as such
(try again later, not "check the password"); the right one connects and lands on the
mailboxes page. The main navigation's Content link is checked here too.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.crypto import decrypt_json
from core.db import session_scope
from core.models import Mailbox
from tests.conftest import create_user
from tests.integration.test_feed import PASSWORD, csrf_from, sign_in
from tests.services.dovecot import DovecotServer, unique_address
from tests.services.smtp_server import TEMPFAIL_AUTH_DOMAIN

pytestmark = pytest.mark.integration

WRONG = "not-the-password-7f3a"


@pytest.fixture
def seller(app: Flask, client: FlaskClient) -> str:
    create_user(app, "rep@seller.test", "Sellers", "--password", PASSWORD)
    sign_in(client, "rep@seller.test")
    return unique_address("seller.test", "rep")


def form(dovecot: DovecotServer, smtp_server: Any, email: str, **changes: str) -> dict[str, str]:
    values = {
        "email": email,
        "imap_host": dovecot.host,
        "imap_port": str(dovecot.imap_port),
        "imap_security": "none",
        "imap_username": "",
        "imap_password": dovecot.password,
        "smtp_host": smtp_server.host,
        "smtp_port": str(smtp_server.port),
        "smtp_security": "none",
        "smtp_username": "",
        "smtp_password": "",  # "same as IMAP"
    }
    return {**values, **changes}


def post(client: FlaskClient, values: dict[str, str]) -> Any:
    token = csrf_from(client.get("/mailboxes/imap").get_data(as_text=True))
    return client.post("/mailboxes/imap", data={**values, "csrf_token": token})


def problems(response: Any) -> list[str]:
    page = response.get_data(as_text=True)
    summary = page.split('class="error-summary"', 1)[1].split("</div>", 1)[0]
    return [html.unescape(m) for m in re.findall(r'<a href="#f-\w+">([^<]*)</a>', summary)]


def mailboxes() -> list[Mailbox]:
    with session_scope() as session:
        rows = session.scalars(select(Mailbox).order_by(Mailbox.id)).all()
        session.expunge_all()
        return list(rows)


def test_the_right_password_connects_and_stores_it_encrypted(
    client: FlaskClient, seller: str, dovecot: DovecotServer, smtp_server: Any
) -> None:
    listing = client.get("/mailboxes").get_data(as_text=True)
    assert '<a href="/mailboxes/imap">Connect IMAP (any other mail server)</a>' in listing
    response = post(client, form(dovecot, smtp_server, seller))
    assert response.status_code == 302, problems(response)
    assert response.headers["Location"].startswith("/mailboxes?message=")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"{seller} is connected." in page
    assert f'<th scope="row" class="address">{seller}</th>' in page
    [mailbox] = mailboxes()
    assert (mailbox.kind, mailbox.email, mailbox.status) == ("imap", seller, "active")
    assert dovecot.password not in mailbox.credentials_encrypted
    stored = decrypt_json(mailbox.credentials_encrypted)
    # Empty SMTP fields took the IMAP login; an empty user name is the address.
    assert stored["smtp"]["password"] == stored["imap"]["password"] == dovecot.password
    assert stored["smtp"]["username"] == stored["imap"]["username"] == seller
    # The same address again is refused on the email field, not saved twice.
    again = post(client, form(dovecot, smtp_server, seller))
    assert again.status_code == 409
    assert problems(again) == [f"Email address: {seller} is already connected."]
    assert len(mailboxes()) == 1


@pytest.mark.parametrize(
    ("changes", "server", "why"),
    [
        ({"imap_password": WRONG}, "IMAP", "[AUTHENTICATIONFAILED] Authentication failed."),
        ({"smtp_password": WRONG}, "SMTP", "5.7.8 Authentication credentials invalid"),
    ],
)
def test_a_wrong_password_names_the_server_that_refused_and_is_never_shown(
    client: FlaskClient,
    seller: str,
    dovecot: DovecotServer,
    smtp_server: Any,
    changes: dict[str, str],
    server: str,
    why: str,
) -> None:
    response = post(client, form(dovecot, smtp_server, seller, **changes))
    assert response.status_code == 422
    [message] = problems(response)
    refused = f"{server}: {server} server refused the login for {seller}: {why} "
    assert message.startswith(refused), message
    assert "check the server, port, security, user name and password" in message
    page = response.get_data(as_text=True)
    assert WRONG not in page and dovecot.password not in page
    # What was typed is kept, passwords excepted; the field is marked.
    assert f'value="{dovecot.host}"' in page
    assert re.search(rf'id="f-{server.lower()}_host"[^>]*aria-invalid="true"', page), page
    assert mailboxes() == []


def test_a_server_that_cannot_log_in_for_now_says_to_try_again_not_to_check_the_password(
    client: FlaskClient,
    app: Flask,
    dovecot: DovecotServer,
    dovecot_tempfail: DovecotServer,
    smtp_server: Any,
) -> None:
    create_user(app, "rep@tempfail.test", "Tempfail", "--password", PASSWORD)
    sign_in(client, "rep@tempfail.test")
    # IMAP: Dovecot whose authentication backend is down answers NO [UNAVAILABLE].
    seller = unique_address("seller.test", "rep")
    imap = post(client, form(dovecot_tempfail, smtp_server, seller))
    # SMTP: IMAP logs in, and the SMTP server answers AUTH with 454 for this login.
    smtp_seller = unique_address(TEMPFAIL_AUTH_DOMAIN, "rep")
    smtp = post(client, form(dovecot, smtp_server, smtp_seller))
    for response, server, who in ((imap, "IMAP", seller), (smtp, "SMTP", smtp_seller)):
        assert response.status_code == 422
        [message] = problems(response)
        assert message.startswith(
            f"{server}: {server} server had a temporary problem logging in {who}: "
        ), message
        assert message.endswith("(the server had a temporary problem: try again in a few minutes).")
        assert "password" not in message and "refused" not in message
        assert dovecot.password not in response.get_data(as_text=True)
    assert mailboxes() == []


def test_an_unreachable_server_and_missing_fields_are_explained(
    client: FlaskClient, seller: str, dovecot: DovecotServer, smtp_server: Any
) -> None:
    closed = post(client, form(dovecot, smtp_server, seller, imap_port="1"))
    assert closed.status_code == 422
    [message] = problems(closed)
    assert message.startswith(f"IMAP: IMAP connection to {dovecot.host} failed"), message
    missing = post(
        client, form(dovecot, smtp_server, "not an address", imap_host="", imap_password="")
    )
    assert missing.status_code == 422
    said = problems(missing)
    assert "Email address: not a valid email address." in said
    assert "IMAP server is required." in said
    assert "IMAP password is required." in said
    assert mailboxes() == []


def test_the_form_refuses_anonymous_callers_and_forged_posts(
    app: Flask, seller: str, dovecot: DovecotServer, smtp_server: Any
) -> None:
    anonymous = app.test_client()
    assert anonymous.get("/mailboxes/imap").status_code == 302
    refused = anonymous.post("/mailboxes/imap", data=form(dovecot, smtp_server, seller))
    assert refused.status_code in (302, 400)
    signed_in = app.test_client()
    sign_in(signed_in, "rep@seller.test")
    forged = signed_in.post(
        "/mailboxes/imap", data={**form(dovecot, smtp_server, seller), "csrf_token": "forged"}
    )
    assert forged.status_code == 400
    assert mailboxes() == []


def test_the_main_navigation_links_the_content_library(client: FlaskClient, seller: str) -> None:
    feed = client.get("/feed").get_data(as_text=True)
    nav = feed.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]
    assert re.search(r'<a href="/documents"\s*>Content</a>', nav), nav
    library = client.get("/documents").get_data(as_text=True)
    nav = library.split('<nav aria-label="Main">', 1)[1].split("</nav>", 1)[0]
    assert re.search(r'<a href="/documents" aria-current="page">Content</a>', nav), nav
    assert nav.count('aria-current="page"') == 1


def needs_reconnect(mailbox_id: int) -> None:
    """What a sync records when the server refuses the stored password."""
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        mailbox.status = "needs_reconnect"
        mailbox.status_reason = "IMAP server refused the login"


def test_a_mailbox_that_needs_reconnecting_is_reconnected_from_the_page(
    app: Flask, client: FlaskClient, seller: str, dovecot: DovecotServer, smtp_server: Any
) -> None:
    assert post(client, form(dovecot, smtp_server, seller)).status_code == 302
    [mailbox] = mailboxes()
    needs_reconnect(mailbox.id)
    listing = client.get("/mailboxes").get_data(as_text=True)
    row = listing.split(f'id="mailbox-{mailbox.id}"', 1)[1].split("</tr>", 1)[0]
    assert "Needs reconnecting" in row
    assert f'<a href="/mailboxes/imap?mailbox_id={mailbox.id}">Reconnect</a>' in row
    # The page's Reconnect button (a POST, as for the other providers) leads to the form.
    token = csrf_from(listing)
    moved = client.post(f"/mailboxes/{mailbox.id}/reconnect", data={"csrf_token": token})
    assert moved.headers["Location"] == f"/mailboxes/imap?mailbox_id={mailbox.id}"
    # The form comes filled in with the stored servers, never the password.
    page = client.get(moved.headers["Location"]).get_data(as_text=True)
    assert f'value="{seller}"' in page and f'value="{dovecot.imap_port}"' in page
    assert f'value="{smtp_server.port}"' in page
    assert dovecot.password not in page
    # Another team's mailbox is not there to fill anything in.
    other = app.test_client()
    create_user(app, "rep@other.test", "Others", "--password", PASSWORD)
    sign_in(other, "rep@other.test")
    assert other.get(f"/mailboxes/imap?mailbox_id={mailbox.id}").status_code == 404

    wrong = post(client, form(dovecot, smtp_server, seller, imap_password=WRONG))
    assert wrong.status_code == 422
    assert mailboxes()[0].status == "needs_reconnect"
    right = post(client, form(dovecot, smtp_server, seller))
    assert right.status_code == 302, problems(right)
    [again] = mailboxes()
    assert (again.id, again.status, again.status_reason) == (mailbox.id, "active", None)


def test_the_api_reconnects_an_imap_mailbox_by_connecting_it_again(
    client: FlaskClient, seller: str, dovecot: DovecotServer, smtp_server: Any
) -> None:
    from tests.conftest import ApiClient

    api = ApiClient(client, create_user(client.application, "ops@seller.test", "Sellers"))
    values = form(dovecot, smtp_server, seller)
    server = {"host": dovecot.host, "port": dovecot.imap_port, "security": "none"}
    body: dict[str, Any] = {
        "kind": "imap",
        "email": seller,
        "imap": {**server, "username": seller, "password": values["imap_password"]},
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "security": "none",
            "username": seller,
            "password": smtp_server.password,
        },
    }
    created = api.post("/api/v1/mailboxes", body)
    assert created.status_code == 201, created.json
    assert api.post("/api/v1/mailboxes", body).status_code == 409  # working: left alone
    needs_reconnect(created.json["id"])
    refused = api.post("/api/v1/mailboxes", {**body, "imap": {**body["imap"], "password": WRONG}})
    assert refused.status_code == 422 and refused.json["error"]["fields"].keys() == {"imap"}
    assert WRONG not in refused.get_data(as_text=True)
    again = api.post("/api/v1/mailboxes", body)
    assert again.status_code == 201, again.json
    assert (again.json["id"], again.json["status"]) == (created.json["id"], "active")
    assert len(mailboxes()) == 1
