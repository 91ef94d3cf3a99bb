"""The mailboxes page: provider, status, last sync, the error, and connect/reconnect/disconnect."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import Settings
from core.db import session_scope
from core.models import Mailbox, Team
from tests.conftest import create_user
from tests.fakes.ews import FakeEws
from tests.fakes.gmail import FakeGmail
from tests.integration.provider_harness import ExchangeHarness, GmailHarness, run_jobs
from tests.integration.test_provider_contract import make_mailbox
from worker.sync.engine import sync_mailbox

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(app: Flask, client: FlaskClient) -> int:
    create_user(app, "owner@team-a.test", "Team A", "--password", PASSWORD)
    token = CSRF.search(client.get("/signin").get_data(as_text=True))
    assert token is not None
    answer = client.post(
        "/signin",
        data={"email": "owner@team-a.test", "password": PASSWORD, "csrf_token": token.group(1)},
    )
    assert answer.status_code == 302
    with session_scope() as session:
        team_id = session.scalar(select(Team.id).where(Team.name == "Team A"))
    assert team_id is not None
    return team_id


def row_of(page: str, mailbox_id: int) -> str:
    found = re.search(rf'<tr id="mailbox-{mailbox_id}".*?</tr>', page, re.S)
    assert found is not None, page
    return found.group(0)


def test_the_page_shows_each_mailbox_and_what_needs_attention(
    env: Settings,
    app: Flask,
    client: FlaskClient,
    fake_gmail: FakeGmail,
    fake_ews: FakeEws,
) -> None:
    team_id = sign_in(app, client)
    gmail_id, _ = make_mailbox(GmailHarness(fake_gmail), team_id)
    exchange_id, exchange_address = make_mailbox(ExchangeHarness(fake_ews), team_id)
    sync_mailbox(gmail_id)
    fake_ews.change_password(exchange_address)
    sync_mailbox(exchange_id)

    page = client.get("/mailboxes").get_data(as_text=True)
    gmail_row, exchange_row = row_of(page, gmail_id), row_of(page, exchange_id)
    assert "Gmail" in gmail_row and "Connected" in gmail_row and "UTC</time>" in gmail_row
    assert "Exchange" in exchange_row and "Needs reconnecting" in exchange_row
    assert "Exchange refused the login" in exchange_row  # the error, visibly
    assert "never" in exchange_row
    # Only Google is set up: Microsoft 365 is listed all the same, disabled, saying what to set.
    assert 'data-provider="gmail" data-available="yes"' in page
    assert 'data-provider="graph" data-available="no"' in page
    assert "the operator must set MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET" in page

    token = CSRF.search(page)
    assert token is not None
    # Reconnect Exchange with the new password, from the page.
    new_password = fake_ews.store.mailbox(exchange_address).password  # type: ignore[union-attr]
    answer = client.post(
        f"/mailboxes/{exchange_id}/reconnect",
        data={"password": new_password, "csrf_token": token.group(1)},
    )
    assert answer.status_code == 302
    assert "Connected" in row_of(client.get("/mailboxes").get_data(as_text=True), exchange_id)

    # Disconnect Gmail: disabled now, tokens wiped by the job.
    assert client.post(f"/mailboxes/{gmail_id}/disconnect", data={}).status_code == 400  # no CSRF
    answer = client.post(f"/mailboxes/{gmail_id}/disconnect", data={"csrf_token": token.group(1)})
    assert answer.status_code == 302
    run_jobs()
    assert "Disconnected" in row_of(client.get("/mailboxes").get_data(as_text=True), gmail_id)
    with session_scope() as session:
        assert session.get_one(Mailbox, gmail_id).status == "disabled"


def test_connect_gmail_from_the_page_comes_back_to_it(
    env: Settings, app: Flask, client: FlaskClient, fake_gmail: FakeGmail
) -> None:
    sign_in(app, client)
    token = CSRF.search(client.get("/mailboxes").get_data(as_text=True))
    assert token is not None
    started = client.post("/mailboxes/connect/gmail", data={"csrf_token": token.group(1)})
    # Our own start page, not Google: it binds this browser to the flow, then goes on.
    assert started.status_code == 303
    assert started.headers["Location"].startswith("/connect/start/")
    start = client.get(started.headers["Location"])
    assert start.status_code == 200
    cookie = start.headers["Set-Cookie"]
    assert cookie.startswith("sl_connect=") and "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie and "Path=/connect" in cookie
    consent_url = re.search(r'url=([^"]+)"', start.get_data(as_text=True))
    assert consent_url is not None
    fake_gmail.add_user("seller@team-a.test")
    fake_gmail.store.consenting_user = "seller@team-a.test"
    consent = requests.get(html.unescape(consent_url.group(1)), allow_redirects=False, timeout=10)
    back = urlsplit(consent.headers["Location"])
    confirm = client.get(f"{back.path}?{back.query}")
    assert confirm.status_code == 303
    page = client.get(confirm.headers["Location"]).get_data(as_text=True)
    assert "Connect seller@team-a.test (Gmail) to team Team A?" in page
    assert "seller@team-a.test" not in client.get("/mailboxes").get_data(as_text=True)
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    token = CSRF.search(page)
    assert action is not None and token is not None
    done = client.post(action.group(1), data={"csrf_token": token.group(1), "action": "connect"})
    assert done.status_code == 303 and done.headers["Location"].endswith("/mailboxes")
    page = client.get("/mailboxes").get_data(as_text=True)
    assert "seller@team-a.test" in page and "Gmail" in page


def test_signed_out_visitors_are_sent_to_sign_in(env: Settings, client: FlaskClient) -> None:
    answer = client.get("/mailboxes")
    assert answer.status_code == 302 and "/signin" in answer.headers["Location"]
