"""A failed connect says, in one plain sentence, what went wrong and what to do.

The Exchange form on the mailboxes page against the fake EWS server (over TLS,
speaking SOAP): a refused sign-in, a server nobody listens on, an address our
outbound policy refuses, a SOAP fault, a busy server. Each answer is one
sentence with advice, never an exception's name, repr or chain, and the form
keeps what was typed except the password. Form and API validation speak the
product's words ("IMAP port must be a whole number"), and an empty optional
field is accepted as empty.
"""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import session_scope
from core.models import Mailbox
from tests.conftest import create_user
from tests.fakes.ews import FakeEws
from tests.integration.test_feed import PASSWORD, csrf_from, sign_in
from tests.integration.test_imap_connect_page import form as imap_form
from tests.integration.test_imap_connect_page import post as imap_post
from tests.integration.test_imap_connect_page import problems
from tests.services.dovecot import DovecotServer, unique_address

pytestmark = pytest.mark.integration

REP = "rep@corp.test"
SECRET = "typed-secret-9d1c"
# What a programmer's error text looks like; none of it may reach the page.
PROGRAMMER_WORDS = re.compile(
    r"Traceback|During handling|<class|Exception|Input should|Value error|Field required"
    r"|while opening|\(opening \w+\)|[A-Z]\w+Error\b"
)


@pytest.fixture
def seller(app: Flask, client: FlaskClient) -> None:
    create_user(app, "owner@corp.test", "Corp", "--password", PASSWORD)
    sign_in(client, "owner@corp.test")


def connect_exchange(client: FlaskClient, **fields: str) -> tuple[int, str, str]:
    """Post the Exchange form; the status, the page's one message, and the page."""
    token = csrf_from(client.get("/mailboxes").get_data(as_text=True))
    answer = client.post("/mailboxes/exchange", data={**fields, "csrf_token": token})
    page = answer.get_data(as_text=True)
    found = re.search(r'<p class="status[^"]*" role="(?:alert|status)">(.*?)</p>', page, re.S)
    message = html.unescape(found.group(1)) if found else ""
    return answer.status_code, message, page


def typed_value(page: str, field_id: str) -> str:
    found = re.search(rf'<input id="{field_id}"[^>]*value="([^"]*)"', page)
    assert found is not None, field_id
    return html.unescape(found.group(1))


def one_plain_sentence(message: str) -> None:
    assert message, "no message shown"
    assert not PROGRAMMER_WORDS.search(message), message
    assert message.endswith("."), message
    assert message.count(". ") == 0, f"more than one sentence: {message}"


def mailboxes() -> list[Mailbox]:
    with session_scope() as session:
        rows = list(session.scalars(select(Mailbox)))
        session.expunge_all()
        return rows


def test_each_exchange_failure_is_one_plain_sentence_and_the_form_keeps_what_was_typed(
    client: FlaskClient, seller: None, fake_ews: FakeEws
) -> None:
    fake_ews.add_mailbox(REP)
    good = fake_ews.store.mailbox(REP)
    assert good is not None
    typed = {"email": REP, "auth": "basic", "username": REP, "password": SECRET}
    cases: list[tuple[str, dict[str, str], str, Any]] = [
        ("wrong password", {"ews_url": fake_ews.endpoint}, "check the user name", None),
        (
            "nobody listens",
            {"ews_url": "https://127.0.0.1:1/EWS/Exchange.asmx"},
            "check the EWS URL",
            None,
        ),
        (
            "refused by our outbound policy",
            {"ews_url": "https://10.20.30.40/EWS/Exchange.asmx"},
            "SIGHTLINE_ALLOWED_NETWORKS",
            None,
        ),
        (
            "a name that does not resolve",
            {"ews_url": "https://no-such-host.invalid/EWS/Exchange.asmx"},
            "check the server name",
            None,
        ),
        (
            "a SOAP fault",
            {"ews_url": fake_ews.endpoint, "password": good.password},
            "ask your Exchange administrator",
            lambda: fake_ews.fault(
                REP,
                "ErrorMailboxStoreUnavailable",
                "The mailbox database is temporarily unavailable.",
                calls=5,
            ),
        ),
        (
            "a busy server",
            {"ews_url": fake_ews.endpoint, "password": good.password},
            "try again in a minute",
            lambda: fake_ews.busy(REP, calls=5),
        ),
        (
            "not Exchange at all",
            {"ews_url": f"{fake_ews.url}/owa/", "password": good.password},
            "did not answer like Exchange",
            None,
        ),
    ]
    for name, changes, advice, arrange in cases:
        if arrange is not None:
            arrange()
        fields = {**typed, **changes}
        status, message, page = connect_exchange(client, **fields)
        assert 400 <= status < 500, (name, status)
        one_plain_sentence(message)
        assert advice in message, (name, message)
        assert 'role="alert"' in page, name
        # What was typed is there to correct; the password is not.
        assert typed_value(page, "ex-email") == REP, name
        assert typed_value(page, "ex-url") == fields["ews_url"], name
        assert typed_value(page, "ex-user") == REP, name
        assert '<option value="basic" selected>' in page, name
        assert fields["password"] not in page, name
        assert 'id="ex-password" name="password" type="password" autocomplete' in page
        fake_ews.store.mailbox(REP).fault_calls = 0  # type: ignore[union-attr]
        fake_ews.store.mailbox(REP).busy_calls = 0  # type: ignore[union-attr]
    assert mailboxes() == []


def test_exchange_form_words_and_an_empty_user_name_is_the_address(
    client: FlaskClient, seller: None, fake_ews: FakeEws
) -> None:
    fake_ews.add_mailbox(REP)
    good = fake_ews.store.mailbox(REP)
    assert good is not None
    status, message, page = connect_exchange(
        client, email=REP, ews_url="mail.corp.test", auth="basic", username=REP, password=SECRET
    )
    assert (status, message) == (
        422,
        "EWS URL must look like https://mail.example.com/EWS/Exchange.asmx.",
    )
    assert typed_value(page, "ex-url") == "mail.corp.test"
    assert SECRET not in page
    status, message, _ = connect_exchange(
        client, email=REP, ews_url=fake_ews.endpoint, auth="basic", username=REP
    )
    assert (status, message) == (422, "Password is required (with a user name) for BASIC sign-in.")
    # The optional user name left empty: the email address signs in (basic auth here).
    status, message, _ = connect_exchange(
        client,
        email=REP,
        ews_url=fake_ews.endpoint,
        auth="basic",
        username="",
        password=good.password,
    )
    assert status == 302, message
    [mailbox] = mailboxes()
    assert (mailbox.kind, mailbox.email, mailbox.status) == ("exchange", REP, "active")


def test_imap_form_words_and_empty_optional_ports(
    client: FlaskClient, seller: None, dovecot: DovecotServer, smtp_server: Any
) -> None:
    address = unique_address("seller.test", "rep")
    wrong = imap_post(client, imap_form(dovecot, smtp_server, address, imap_port="nine"))
    assert wrong.status_code == 422
    assert problems(wrong) == ["IMAP port must be a whole number."]
    too_big = imap_post(client, imap_form(dovecot, smtp_server, address, smtp_port="70000"))
    assert problems(too_big) == ["SMTP port must be at most 65535."]
    # Empty ports are the usual ones for the chosen security (here the test servers'
    # ports are not the usual ones, so the connect is refused by the server, not the form).
    empty = imap_post(
        client, imap_form(dovecot, smtp_server, address, imap_port="", imap_security="")
    )
    messages = problems(empty)
    assert messages and not any(PROGRAMMER_WORDS.search(m) for m in messages), messages
    assert not any(m.startswith(("IMAP port", "SMTP port", "IMAP security")) for m in messages)


def test_the_api_speaks_the_same_words(api: Any) -> None:
    answer = api.post(
        "/api/v1/mailboxes",
        {
            "kind": "imap",
            "email": "rep@seller.test",
            "imap": {"host": "imap.seller.test", "port": "993", "username": "u", "password": "p"},
            "smtp": {"host": "smtp.seller.test", "port": 587, "username": "u", "password": ""},
            "verify": False,
        },
    )
    assert answer.status_code == 422
    fields = answer.json["error"]["fields"]
    assert fields == {"imap.port": "must be a whole number", "smtp.password": "is required"}
