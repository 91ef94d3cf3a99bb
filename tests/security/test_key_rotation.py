"""Rotating SECRET_KEY and SIGHTLINE_ENCRYPTION_KEY as SECURITY.md tells an operator to.

- Encryption key: new key first, `flask --app web rotate-credentials`, old key
  dropped; the mailbox still syncs against Dovecot (its credentials open), and
  a team's Salesforce credentials still open. A key dropped too early is caught
  by the command (exit 1, the rows named) instead of a mailbox silently needing
  to be reconnected.
- SECRET_KEY: the new key signs, the former one (SECRET_KEY_FALLBACKS) still
  verifies. The pixel, links and document link of an email sent before the
  rotation keep working, the browser stays signed in and stays one of the
  team's own devices, a Graph subscription's notifications are still
  accepted. Without the fallback all of that breaks, which is why it exists.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from config import Settings, get_settings
from core import redis as core_redis
from core.crypto import CredentialsError, decrypt_json, encrypt_json
from core.db import session_scope
from core.documents.tokens import link_token, read_link_token
from core.models import Mailbox, MailboxStatus, SalesforceConnection, Team
from core.tracking.tokens import (
    click_token,
    device_cookie,
    open_token,
    read_click_token,
    read_device_cookie,
    read_open_token,
)
from tests.conftest import TEST_FERNET_KEY, TEST_SECRET_KEY, create_user
from tests.integration.test_app_pages import signed_in
from tests.integration.test_tracking_edge import call, entries
from tests.services.dovecot import DovecotServer, unique_address
from web import create_app
from web.tracking.app import SightlineAsgi
from worker.sync.engine import sync_mailbox
from worker.sync.push import client_state, client_state_matches

pytestmark = pytest.mark.integration

NEW_SECRET_KEY = "rotated-secret-key-9876543210-zyxwvutsrqponmlkjihgfedcba"
NEW_FERNET_KEY = "rVxg3Fo0Yd3DqQ3k2n6wqkR3vYtqjzYqJmYl0rGZs7U="  # a fixed 32-byte key
LOST_FERNET_KEY = "m0c2c1YbJ9mX3x2oZ1mP5t5Jt8l9xgXq9cH0m1m2m3M="
PASSWORD = "correct horse battery staple"


def reconfigure(monkeypatch: pytest.MonkeyPatch, **values: str | None) -> Settings:
    """What an operator does: change the environment and restart the processes."""
    for name, value in values.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    core_redis.get_redis.cache_clear()
    return get_settings()


def rotate_credentials(app: Flask) -> Any:
    return app.test_cli_runner().invoke(args=["rotate-credentials"])


@pytest.fixture
def mailbox_id(env: Settings, dovecot: DovecotServer, smtp_server: Any) -> int:
    sender = unique_address("seller.test", "rep")
    credentials = {
        "imap": {
            "host": dovecot.host,
            "port": dovecot.imap_port,
            "username": sender,
            "password": dovecot.password,
            "security": "none",
        },
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "username": sender,
            "password": smtp_server.password,
            "security": "none",
        },
        "folders": ["INBOX"],
    }
    with session_scope() as session:
        team = Team(name="Rotation")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id,
            kind="imap",
            email=sender,
            credentials_encrypted=encrypt_json(credentials),
        )
        session.add(mailbox)
        session.add(
            SalesforceConnection(
                team_id=team.id,
                auth_kind="oauth",
                credentials_encrypted=encrypt_json({"refresh_token": "5Aep861-refresh"}),
            )
        )
        session.flush()
        return int(mailbox.id)


def stored(mailbox_id: int) -> tuple[str, str]:
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        connection = session.scalars(
            select(SalesforceConnection).where(SalesforceConnection.team_id == mailbox.team_id)
        ).one()
        return mailbox.credentials_encrypted, str(connection.credentials_encrypted)


def mailbox_status(mailbox_id: int) -> tuple[str, str | None]:
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        return mailbox.status, mailbox.status_reason


def test_the_encryption_key_is_rotated_without_losing_a_mailbox(
    app: Flask, mailbox_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = stored(mailbox_id)
    reconfigure(monkeypatch, SIGHTLINE_ENCRYPTION_KEY=f"{NEW_FERNET_KEY},{TEST_FERNET_KEY}")
    result = rotate_credentials(app)
    assert result.exit_code == 0, result.output
    assert "1 mailbox(es) and 1 Salesforce connection(s)" in result.output
    after = stored(mailbox_id)
    assert after[0] != before[0] and after[1] != before[1]
    assert rotate_credentials(app).exit_code == 0  # safe to run twice

    reconfigure(monkeypatch, SIGHTLINE_ENCRYPTION_KEY=NEW_FERNET_KEY)  # the old key dropped
    mailbox_creds, salesforce_creds = stored(mailbox_id)
    assert decrypt_json(salesforce_creds) == {"refresh_token": "5Aep861-refresh"}
    assert decrypt_json(mailbox_creds)["imap"]["security"] == "none"
    sync_mailbox(mailbox_id)  # logs in to Dovecot with the re-encrypted password
    assert mailbox_status(mailbox_id) == (MailboxStatus.ACTIVE, None)


def test_a_key_dropped_before_rotating_is_caught_not_lost(
    app: Flask, mailbox_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = stored(mailbox_id)
    # The operator replaced the key instead of putting the new one in front of it.
    reconfigure(monkeypatch, SIGHTLINE_ENCRYPTION_KEY=f"{NEW_FERNET_KEY},{LOST_FERNET_KEY}")
    result = rotate_credentials(app)
    assert result.exit_code == 1
    assert f"mailbox id={mailbox_id}" in result.output
    assert "salesforce connection id=" in result.output
    assert "put the key they were encrypted with back" in result.output
    assert stored(mailbox_id) == before  # nothing rewritten, so nothing lost
    with pytest.raises(CredentialsError):
        decrypt_json(before[0])
    # Putting the old key back (behind the new one) recovers everything.
    reconfigure(monkeypatch, SIGHTLINE_ENCRYPTION_KEY=f"{NEW_FERNET_KEY},{TEST_FERNET_KEY}")
    assert rotate_credentials(app).exit_code == 0
    reconfigure(monkeypatch, SIGHTLINE_ENCRYPTION_KEY=NEW_FERNET_KEY)
    sync_mailbox(mailbox_id)
    assert mailbox_status(mailbox_id) == (MailboxStatus.ACTIVE, None)


def pixel_and_click(open_path: str, click_path: str) -> tuple[int, int, int]:
    """Status of the pixel and the click, and how many hits the stream took."""
    asgi = SightlineAsgi()
    asgi.start()

    async def scenario() -> tuple[int, int]:
        try:
            pixel = await call(asgi, "GET", open_path)
            click = await call(asgi, "GET", click_path)
            return pixel.status, click.status
        finally:
            await asgi.stop()

    pixel, click = asyncio.run(scenario())
    return pixel, click, len(entries(core_redis.get_redis()))


def test_emails_sent_before_a_secret_key_rotation_keep_working(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(app, "rep@rotation.test", "Rotation", "--password", PASSWORD)
    browser = signed_in(app, "rep@rotation.test")
    session_cookie = browser.get_cookie("session")
    assert session_cookie is not None
    opened = open_token(41, 7, 0, 1_800_000_000)
    clicked = click_token(41, 7, 0, 1_800_000_000, 1, "https://acme.test/pricing")
    document = link_token(3, 2, 41, 0)
    device = device_cookie("d" * 32, 7, 5)
    graph_state = client_state(12)

    reconfigure(monkeypatch, SECRET_KEY=NEW_SECRET_KEY, SECRET_KEY_FALLBACKS=TEST_SECRET_KEY)
    assert read_open_token(opened) is not None
    assert read_click_token(clicked) is not None
    assert read_link_token(document) is not None
    assert read_device_cookie(device) is not None
    assert client_state_matches(12, graph_state)
    assert pixel_and_click(f"/o/{opened}.gif", f"/c/{clicked}") == (200, 302, 2)
    restarted = create_app({"TESTING": True}).test_client()
    restarted.set_cookie("session", session_cookie.value)
    assert restarted.get("/feed").status_code == 200  # still signed in
    # What is signed from now on is signed with the new key only.
    fresh = open_token(42, 7, 0, 1_800_000_000)
    reconfigure(monkeypatch, SECRET_KEY=TEST_SECRET_KEY, SECRET_KEY_FALLBACKS=None)
    assert read_open_token(fresh) is None
    assert not client_state_matches(12, client_state_of_new_key())


def client_state_of_new_key() -> str:
    from worker.sync.push import _client_state

    return _client_state(NEW_SECRET_KEY, 12)


def test_without_the_fallback_a_rotation_breaks_what_was_sent(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(app, "rep@rotation.test", "Rotation", "--password", PASSWORD)
    session_cookie = signed_in(app, "rep@rotation.test").get_cookie("session")
    assert session_cookie is not None
    opened = open_token(41, 7, 0, 1_800_000_000)
    clicked = click_token(41, 7, 0, 1_800_000_000, 1, "https://acme.test/pricing")
    document = link_token(3, 2, 41, 0)
    graph_state = client_state(12)

    reconfigure(monkeypatch, SECRET_KEY=NEW_SECRET_KEY, SECRET_KEY_FALLBACKS=None)
    assert read_open_token(opened) is None
    assert read_link_token(document) is None
    assert not client_state_matches(12, graph_state)
    # The pixel still answers (an image, never a broken one) but counts nothing;
    # the link is a dead end for the prospect.
    assert pixel_and_click(f"/o/{opened}.gif", f"/c/{clicked}") == (200, 404, 0)
    restarted = create_app({"TESTING": True}).test_client()
    restarted.set_cookie("session", session_cookie.value)
    assert restarted.get("/feed").status_code == 302  # signed out


def test_a_fallback_key_must_be_a_real_former_key(tmp_path: Any) -> None:
    from config.settings import ConfigError, load_settings

    base = {"SIGHTLINE_VAR_DIR": str(tmp_path), "SECRET_KEY": NEW_SECRET_KEY}
    with pytest.raises(ConfigError, match=r"^SECRET_KEY_FALLBACKS: key #2 is shorter"):
        load_settings({**base, "SECRET_KEY_FALLBACKS": f"{TEST_SECRET_KEY}, short"})
    with pytest.raises(ConfigError, match=r"^SECRET_KEY_FALLBACKS: key #1 is the current"):
        load_settings({**base, "SECRET_KEY_FALLBACKS": NEW_SECRET_KEY})
    settings = load_settings({**base, "SECRET_KEY_FALLBACKS": f"{TEST_SECRET_KEY},{'o' * 40}"})
    assert settings.signing_keys == ["o" * 40, TEST_SECRET_KEY, NEW_SECRET_KEY]
    assert TEST_SECRET_KEY in settings.secrets_to_redact()
    assert TEST_SECRET_KEY not in repr(settings)
