"""A server that cannot log us in for now is not a wrong password: the mailbox keeps working.

Dovecot answers NO [UNAVAILABLE] to LOGIN while its authentication backend is down
(here a checkpassword program that exits 111, `dovecot_tempfail`), and an SMTP
server answers 454 4.7.0 to AUTH (our SMTP server, for a login at
`tempfail-auth.smtp.test`). Taken for a refusal, either stopped the mailbox
("needs reconnect") until a person typed the same password again. Now the sync is
retried later, the IDLE watch backs off and tries again, and a wrong password is
still a refusal.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from config import Settings
from core.crypto import decrypt_json, encrypt_json
from core.db import session_scope
from core.models import Mailbox, MailboxStatus, Team, utcnow
from tests.services.dovecot import DovecotServer, unique_address
from tests.services.smtp_server import TEMPFAIL_AUTH_DOMAIN
from worker import listener
from worker.sync import push_latency, wanted
from worker.sync.base import ProviderError
from worker.sync.drain import sync_entry
from worker.sync.imap_connect import LoginUnavailableError, open_imap, open_smtp
from worker.sync.watch_steps import run_blocking

WRONG = "not-the-password-5d1c"


def imap_server(dovecot: DovecotServer, user: str, password: str) -> dict[str, Any]:
    return {
        "host": dovecot.host,
        "port": dovecot.imap_port,
        "username": user,
        "password": password,
        "security": "none",
    }


def no_tls() -> ssl.SSLContext:
    raise AssertionError("plain connections only here")


def login_imap(server: dict[str, Any]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        open_imap(server, timeout=10, ssl_context=no_tls)
    return caught.value


def login_smtp(smtp_server: Any, user: str, password: str) -> ProviderError:
    server = {
        "host": smtp_server.host,
        "port": smtp_server.port,
        "username": user,
        "password": password,
        "security": "none",
    }
    with pytest.raises(ProviderError) as caught:
        open_smtp(server, helo="localhost", timeout=10, ssl_context=no_tls)
    return caught.value


def test_dovecot_with_its_auth_backend_down_is_a_failure_for_now(
    dovecot_tempfail: DovecotServer,
) -> None:
    user = unique_address("seller.test", "rep")
    error = login_imap(imap_server(dovecot_tempfail, user, dovecot_tempfail.password))
    assert isinstance(error, LoginUnavailableError)
    assert not error.needs_reconnect and not error.permanent
    # Dovecot's own words, after ours; never the password.
    said = str(error)
    assert said.startswith(f"IMAP server had a temporary problem logging in {user}: [UNAVAILABLE]")
    assert dovecot_tempfail.password not in said


def test_a_wrong_password_is_still_a_refusal(dovecot: DovecotServer, smtp_server: Any) -> None:
    user = unique_address("seller.test", "rep")
    imap = login_imap(imap_server(dovecot, user, WRONG))
    smtp = login_smtp(smtp_server, user, WRONG)
    for error in (imap, smtp):
        assert error.needs_reconnect and not isinstance(error, LoginUnavailableError)
        assert "refused the login" in str(error) and WRONG not in str(error)


def test_an_smtp_454_to_auth_is_a_failure_for_now(smtp_server: Any) -> None:
    user = unique_address(TEMPFAIL_AUTH_DOMAIN, "rep")
    error = login_smtp(smtp_server, user, smtp_server.password)
    assert isinstance(error, LoginUnavailableError)
    assert not error.needs_reconnect and not error.permanent
    assert str(error).startswith(f"SMTP server had a temporary problem logging in {user}: 4.7.0")


def mailbox_on(server: DovecotServer) -> int:
    email = unique_address("seller.test", "rep")
    creds = {
        "imap": imap_server(server, email, server.password),
        "smtp": {**imap_server(server, email, server.password), "port": 1},
        "folders": ["INBOX"],
    }
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id,
            kind="imap",
            email=email,
            credentials_encrypted=encrypt_json(creds),
            created_at=utcnow(),
        )
        session.add(mailbox)
        session.flush()
        return mailbox.id


def status_of(mailbox_id: int) -> tuple[str, str | None]:
    with session_scope() as session:
        row = session.execute(
            select(Mailbox.status, Mailbox.status_reason).where(Mailbox.id == mailbox_id)
        ).one()
        return row.status, row.status_reason


def test_a_sync_that_cannot_log_in_for_now_keeps_the_mailbox_active_and_comes_back(
    env: Settings, dovecot_tempfail: DovecotServer
) -> None:
    mailbox_id = mailbox_on(dovecot_tempfail)
    sync_entry(mailbox_id)  # what the sync processes run for a claimed mailbox
    assert status_of(mailbox_id) == (MailboxStatus.ACTIVE, None)
    assert mailbox_id in wanted.scheduled()  # asked again for later


def test_the_idle_watch_backs_off_and_tries_again(
    env: Settings, dovecot_tempfail: DovecotServer, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox_id = mailbox_on(dovecot_tempfail)
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        email, credentials = mailbox.email, decrypt_json(mailbox.credentials_encrypted)
    stop = threading.Event()
    marks = push_latency.LiveMarks()
    steps = listener._watch_mailbox(
        mailbox_id, "imap", email, credentials, listener._hold_steps, marks
    )
    watch = threading.Thread(target=run_blocking, args=(steps, stop), daemon=True)
    caplog.set_level("INFO", logger="worker.listener")
    watch.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "idle_reconnect" not in caplog.text:
        time.sleep(0.05)
    alive = watch.is_alive()
    stop.set()
    watch.join(timeout=20)
    marks.close()
    assert "idle_reconnect" in caplog.text and "idle_stopped" not in caplog.text
    assert alive  # a refused login would have ended the watch
    assert status_of(mailbox_id) == (MailboxStatus.ACTIVE, None)
