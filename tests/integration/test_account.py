"""The Account page and what hangs on it: signature, sender values, password, devices, tokens.

Flask test client against the real database (SQLite and PostgreSQL) and Redis;
mail goes out through the real SMTP server into Dovecot, hits through the real
stream and events worker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import Settings, get_settings
from core.db import session_scope
from core.models import Device, Enrollment, SentMessage, Team
from core.tracking.tokens import DEVICE_COOKIE, read_device_cookie
from tests.conftest import ApiClient, create_user
from tests.integration.test_app_compose import add_mailbox, server
from tests.integration.test_app_pages import csrf, signed_in
from tests.integration.test_events_worker import Sent, drain, hit, make_sent, stored, stream
from tests.integration.test_feed import PASSWORD, sign_in
from tests.services.dovecot import DovecotServer, has_message_id
from worker.sequences.jobs import send_due_step

pytestmark = pytest.mark.integration
__all__ = ["stream"]  # the events worker's stream fixture, used here too

ANY_TIME = {
    "send_window": "1",
    "send_days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "send_start": "00:00",
    "send_end": "24:00",
}
NEW_PASSWORD = "a brand new passphrase"
# What no engine changes (a password hash, a page's provider list, the API's shape over
# what the page tests on both) runs on one, to keep `make test` inside its budget.
only_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
only_sqlite = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def post(client: FlaskClient, path: str, **data: Any) -> Any:
    return client.post(path, data={"csrf_token": csrf(client, "/account"), **data})


def page(response: Any) -> str:
    text: str = response.get_data(as_text=True)
    return (
        text.replace("&#34;", '"').replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">")
    )


def sequence_with(
    client: FlaskClient, mailbox_id: int, subject: str, body: str, tracking: str = ""
) -> int:
    created = post(
        client,
        "/sequences/new",
        name="Intro",
        mailbox_id=str(mailbox_id),
        tracking=tracking,
        **ANY_TIME,
    )
    assert created.status_code == 302, page(created)
    sequence_id = int(re.findall(r"/sequences/(\d+)", created.headers["Location"])[0])
    step = post(
        client,
        f"/sequences/{sequence_id}/steps/new",
        delay="0",
        unit="minutes",
        subject=subject,
        body_html=body,
    )
    assert step.status_code == 302, page(step)
    return sequence_id


@pytest.fixture
def mailer(
    app: Flask,
    env: Settings,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> tuple[FlaskClient, int, str]:
    """A rep created the README's way, without a name, with a mailbox on the real servers."""
    sender = unique_address(prefix="rep")
    create_user(app, sender, "Sellers", "--password", PASSWORD)
    mailbox_id = add_mailbox(
        sender,
        {
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
            "folders": ["INBOX"],
            "append_to_sent": False,
        },
    )
    return signed_in(app, sender), mailbox_id, sender


def enrol(client: FlaskClient, sequence_id: int, email: str, name: str) -> tuple[int, str]:
    enrolled = post(client, f"/sequences/{sequence_id}/enroll", email=email, name=name)
    assert enrolled.status_code == 302, page(enrolled)
    shown = page(client.get(enrolled.headers["Location"]))
    with session_scope() as session:
        enrollment_id = session.scalars(
            select(Enrollment.id).where(Enrollment.sequence_id == sequence_id)
        ).one()
    return enrollment_id, shown


def test_what_the_sender_lacks_is_asked_of_them_and_their_signature_goes_out(
    mailer: tuple[FlaskClient, int, str],
    dovecot: DovecotServer,
    unique_address: Callable[..., str],
) -> None:
    client, mailbox_id, _ = mailer
    prospect = unique_address()
    sequence_id = sequence_with(
        client,
        mailbox_id,
        "A note from {{sender_first_name}}",
        "<p>Hi {{first_name}},</p><p>more soon.</p>{{signature}}",
    )
    # {{signature}} is offered in the placeholder menus of steps and of compose.
    for form in (f"/sequences/{sequence_id}/steps/new", "/emails/new"):
        assert "{{signature}}" in page(client.get(form)), form
    # Enrolling warns at once: the sender has neither a name nor a signature.
    enrollment_id, shown = enrol(client, sequence_id, prospect, "Dana Scully")
    assert "Warning: The sender" in shown and "has no name and signature yet" in shown
    assert "Account page (/account)" in shown

    assert send_due_step(enrollment_id, 0) == "nothing due"
    with session_scope() as session:
        held = session.get_one(Enrollment, enrollment_id)
        assert (held.state, held.waits_for_sender) == ("paused", True)
        assert held.state_reason is not None
        assert "from the sender: add your name and your signature on your Account page" in (
            held.state_reason
        )
        assert "on the prospect" not in held.state_reason
    enrollment_page = page(client.get(f"/enrollments/{enrollment_id}"))
    assert 'class="account-link" href="/account"' in enrollment_page

    # The name alone is not enough: still waiting, now only for the signature.
    saved = post(client, "/account", name="Riley Rep", signature="")
    assert saved.status_code == 302
    with session_scope() as session:
        held = session.get_one(Enrollment, enrollment_id)
        assert held.state == "paused" and held.state_reason is not None
        assert "add your signature on your Account page" in held.state_reason
    # With the signature the enrolment goes on by itself, and the mail carries both.
    saved = post(
        client,
        "/account",
        name="Riley Rep",
        signature="Riley Rep\nAcme <b>Sales</b> <script>alert(1)</script>",
    )
    assert saved.status_code == 302
    assert "1 paused enrolment that needed it went on" in page(client.get("/account"))
    with session_scope() as session:
        assert session.get_one(Enrollment, enrollment_id).state == "active"
    assert send_due_step(enrollment_id, 0) == "sent"
    with session_scope() as session:
        message_id = session.scalars(
            select(SentMessage.message_id).where(SentMessage.enrollment_id == enrollment_id)
        ).one()
    message = dovecot.wait_for_message(prospect, has_message_id(message_id))
    assert message["Subject"] == "A note from Riley"
    html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html = html_part.get_content()
    assert "Riley Rep<br>" in html and "Acme <b>Sales</b>" in html and "<script" not in html
    lines = [line.strip() for line in text_part.get_content().splitlines() if line.strip()]
    assert lines[-2:] == ["Riley Rep", "Acme Sales"]


def test_a_team_with_tracking_off_by_default_sends_no_pixel_unless_a_sequence_asks(
    mailer: tuple[FlaskClient, int, str],
    dovecot: DovecotServer,
    unique_address: Callable[..., str],
) -> None:
    client, mailbox_id, _ = mailer
    saved = post(client, "/settings", unsubscribe_headers="on")  # tracking left unticked
    assert saved.status_code == 302, page(saved)
    assert 'name="tracking_enabled" type="checkbox" checked' not in page(client.get("/settings"))
    body = '<p>Our <a href="https://acme.test/pricing">pricing</a>.</p>'
    delivered: dict[str, str] = {}
    for label, chosen in (("default", ""), ("chosen", "on")):
        prospect = unique_address()
        sequence_id = sequence_with(client, mailbox_id, f"Pricing {label}", body, chosen)
        enrollment_id, _ = enrol(client, sequence_id, prospect, "Dana Scully")
        assert send_due_step(enrollment_id, 0) == "sent"
        with session_scope() as session:
            message_id = session.scalars(
                select(SentMessage.message_id).where(SentMessage.enrollment_id == enrollment_id)
            ).one()
        message = dovecot.wait_for_message(prospect, has_message_id(message_id))
        html_part = message.get_body(("html",))
        assert html_part is not None
        delivered[label] = html_part.get_content()
    assert "/o/" not in delivered["default"] and "/c/" not in delivered["default"]
    assert 'href="https://acme.test/pricing"' in delivered["default"]
    # A sequence that turns tracking on explicitly is tracked all the same.
    assert re.search(r'src="http://localhost:5000/o/[^"]+\.gif"', delivered["chosen"])
    assert re.search(r'href="http://localhost:5000/c/[^"]+"', delivered["chosen"])


@pytest.fixture
def rep(app: Flask, env: Settings) -> FlaskClient:
    create_user(app, "rep@acct.test", "Account team", "--password", PASSWORD)
    return signed_in(app, "rep@acct.test")


def test_a_token_is_shown_once_works_and_stops_working_when_revoked(
    app: Flask, rep: FlaskClient
) -> None:
    refused = post(rep, "/account/tokens", token_name="  ")
    assert refused.status_code == 422 and "Token name: name the token" in page(refused)
    made = post(rep, "/account/tokens", token_name="CI")
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    token = re.findall(r'<code id="new-token">(sl_[^<]+)</code>', page(made))[0]
    listing = page(rep.get("/account"))
    assert token not in listing and f"{token[:10]}…" in listing and ">CI</td>" in listing
    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/mailboxes", headers=headers).status_code == 200
    token_id = int(re.findall(r'data-token="(\d+)"', listing)[0])
    revoked = post(rep, f"/account/tokens/{token_id}/revoke")
    assert revoked.status_code == 302
    assert api.get("/api/v1/mailboxes", headers=headers).status_code == 401
    assert post(rep, f"/account/tokens/{token_id}/revoke").status_code == 404


@only_postgresql
def test_a_password_changes_only_with_the_current_one_and_by_the_cli_rule(
    app: Flask, rep: FlaskClient
) -> None:
    elsewhere = signed_in(app, "rep@acct.test")  # another browser, same person
    assert elsewhere.get("/account").status_code == 200
    wrong = post(
        rep,
        "/account/password",
        current_password="not it at all",
        new_password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
    )
    assert wrong.status_code == 422
    assert "Current password: that is not your current password." in page(wrong)
    short = post(
        rep,
        "/account/password",
        current_password=PASSWORD,
        new_password="short",
        confirm_password="short",
    )
    assert short.status_code == 422 and "at least 12 characters" in page(short)
    changed = post(
        rep,
        "/account/password",
        current_password=PASSWORD,
        new_password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
    )
    assert changed.status_code == 302
    # The browser that changed it stays signed in; the other one is signed out.
    assert rep.get("/account").status_code == 200
    assert elsewhere.get("/account").status_code == 302
    assert sign_in(app.test_client(), "rep@acct.test").status_code == 401
    assert sign_in(app.test_client(), "rep@acct.test", NEW_PASSWORD).status_code == 302


def test_a_forgotten_device_is_no_longer_the_senders_own(
    app: Flask, rep: FlaskClient, stream: redis.Redis
) -> None:
    cookie = rep.get_cookie(DEVICE_COOKIE)
    assert cookie is not None
    device = read_device_cookie(cookie.value)
    assert device is not None
    sent: Sent = make_sent("Account team", "dana@prospect.test")
    hit(stream, sent, device=device)
    drain(stream)
    assert [c for _, c, _ in stored()] == ["self"]
    with session_scope() as session:
        row_id = session.scalars(
            select(Device.id).where(Device.public_id == device.device_id)
        ).one()
    # Another team's person cannot forget it (404), its owner can.
    create_user(app, "other@acct.test", "Other team", "--password", PASSWORD)
    other = signed_in(app, "other@acct.test")
    assert post(other, f"/account/devices/{row_id}/forget").status_code == 404
    listing = page(rep.get("/account"))
    assert f'data-device="{row_id}"' in listing
    assert post(rep, f"/account/devices/{row_id}/forget").status_code == 302
    assert f'data-device="{row_id}"' not in page(rep.get("/account"))
    hit(stream, sent, device=device)
    drain(stream)
    assert [c for _, c, _ in stored()] == ["self", "person"]


@only_postgresql
def test_the_api_does_what_the_account_page_does_for_the_token_holder_only(
    app: Flask, rep: FlaskClient
) -> None:
    token = create_user(app, "api@acct.test", "Account team", "--password", PASSWORD)
    api = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    named = api.patch(
        "/api/v1/account", json={"name": "  Ada   Api ", "signature": "Ada"}, headers=headers
    )
    assert named.status_code == 200, named.get_json()
    assert (named.get_json()["name"], named.get_json()["signature"]) == ("Ada Api", "<p>Ada</p>")
    bad = api.patch("/api/v1/account", json={"name": "x" * 201}, headers=headers)
    assert bad.status_code == 422 and "name" in bad.get_json()["error"]["fields"]
    wrong = api.post(
        "/api/v1/account/password",
        json={"current_password": "nope", "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert wrong.status_code == 422
    assert wrong.get_json()["error"]["fields"] == {
        "current_password": "that is not your current password"
    }
    made = api.post("/api/v1/account/tokens", json={"name": "laptop"}, headers=headers)
    assert made.status_code == 201 and made.headers["Cache-Control"] == "no-store"
    second = made.get_json()
    listed = api.get("/api/v1/account/tokens", headers=headers).get_json()["tokens"]
    assert [t["name"] for t in listed] == ["laptop", None]  # newest first; the CLI's has none
    assert second["token"] not in str(listed) and listed[0]["prefix"] == second["token"][:10]
    # Someone else's token and device are not found, whoever asks.
    with session_scope() as session:
        rep_device = session.scalars(select(Device.id)).first()
    assert api.delete(f"/api/v1/account/devices/{rep_device}", headers=headers).status_code == 404
    gone = api.delete(f"/api/v1/account/tokens/{second['id']}", headers=headers)
    assert gone.status_code == 204
    refused = api.get("/api/v1/account", headers={"Authorization": f"Bearer {second['token']}"})
    assert refused.status_code == 401
    assert api.get("/api/v1/account", headers=headers).get_json()["email"] == "api@acct.test"


@only_sqlite
def test_the_mailboxes_page_lists_every_provider_and_what_the_operator_must_set(
    app: Flask, rep: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MICROSOFT_CLIENT_ID", "client-id")
    monkeypatch.setenv("MICROSOFT_CLIENT_SECRET", "client-secret")
    get_settings.cache_clear()
    listing = page(rep.get("/mailboxes"))
    for kind, available in (
        ("gmail", "no"),
        ("graph", "yes"),
        ("exchange", "yes"),
        ("imap", "yes"),
    ):
        assert f'data-provider="{kind}" data-available="{available}"' in listing
    assert listing.count("the operator must set") == 1
    assert "the operator must set GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET" in listing
    assert re.search(r"<button type=\"submit\" disabled[^>]*>Connect Gmail", listing)


@only_sqlite
def test_enrolling_one_prospect_by_api_warns_what_will_make_it_wait(
    app: Flask, api: ApiClient
) -> None:
    mailbox_id = add_mailbox("owner@team-a.test")
    step = {"delay_seconds": 0, "subject": "Hi", "body_html": "<p>{{company}}</p>{{sender_name}}"}
    created = api.post(
        "/api/v1/sequences",
        {"name": "Intro", "mailbox_id": mailbox_id, "steps": [step], "tracking": False},
    )
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["tracking"] is False
    enrolled = api.post(
        "/api/v1/enrollments",
        {"sequence_id": created.get_json()["id"], "email": "dana@prospect.test"},
    )
    assert enrolled.status_code == 201, enrolled.get_json()
    sender, prospect = enrolled.get_json()["warnings"]
    assert "The sender (owner@team-a.test) has no name yet" in sender
    assert "Account page (/account)" in sender
    assert prospect.startswith("dana@prospect.test has no company")
    # The team's default goes off through the API as on the settings page.
    headers = {"Authorization": f"Bearer {api.token}"}
    switched = api.client.patch("/api/v1/team", json={"tracking_enabled": False}, headers=headers)
    assert switched.status_code == 200 and switched.get_json()["tracking_enabled"] is False
    with session_scope() as session:
        assert session.scalars(select(Team.tracking_enabled)).one() is False


def test_guessing_the_current_password_is_limited_as_signing_in_is(
    app: Flask, rep: FlaskClient
) -> None:
    for _ in range(10):  # SIGHTLINE_SIGNIN_MAX_FAILURES: the same counter as /signin's
        guess = post(
            rep,
            "/account/password",
            current_password="a wrong guess!",
            new_password=NEW_PASSWORD,
            confirm_password=NEW_PASSWORD,
        )
        assert guess.status_code == 422
    right = post(
        rep,
        "/account/password",
        current_password=PASSWORD,
        new_password=NEW_PASSWORD,
        confirm_password=NEW_PASSWORD,
    )
    assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0
    assert "too many wrong passwords" in page(right)
    # The sign-in page counts the same guesses: its limit is reached too.
    assert sign_in(app.test_client(), "rep@acct.test").status_code == 429
