"""A team cannot point the server's mail connections at internal services.

A live TCP listener on loopback plays the internal service: it greets with an
SSH banner (or an HTTP error page) holding a secret. In production mode
(`SIGHTLINE_ENV=production`, no SIGHTLINE_ALLOWED_NETWORKS) every spelling of
loopback in tests/security/outbound_spellings.py is tried through the real
API and the real forms, for the IMAP and SMTP servers and the EWS URL, with and
without `verify`: each answer is a 4xx, nothing connects, the secret never
comes back. A mailbox saved before (or while the operator allowed it) is
refused when the sync, the listener or a send uses it. Outside production,
where loopback is allowed, a service that does not speak IMAP/SMTP/EWS is
named as such, its bytes never shown. Pinning: with a resolver that answers
differently the second time (DNS rebinding), the connection goes to the
address that was checked (test_outbound_pinning.py).

Pinning (DNS rebinding) is tested in test_outbound_pinning.py.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import Settings, get_settings
from core.db import session_scope
from core.models import Mailbox, MailboxStatus
from tests.conftest import ApiClient, create_user
from tests.integration.test_feed import PASSWORD, csrf_from, sign_in
from tests.security.listeners import HTTP_ANSWER, SECRET, SSH_BANNER, Listener
from tests.security.outbound_spellings import LOOPBACK_SPELLINGS, LOOPBACK_URLS
from worker.sync.base import OutgoingMessage, ProviderError
from worker.sync.engine import sync_mailbox
from worker.sync.exchange import ExchangeProvider
from worker.sync.imap import ImapProvider

pytestmark = pytest.mark.integration

SELLER = "rep@seller.test"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """One engine is enough: the policy does not touch the database."""
    return sqlite_database_url


@contextlib.contextmanager
def loopback_listeners(banner: bytes = SSH_BANNER) -> Iterator[list[Listener]]:
    """Listeners on 127.0.0.1 and ::1 on one port, so every spelling of loopback reaches one."""
    for _ in range(20):
        v4 = Listener("127.0.0.1", banner)
        try:
            v6 = Listener.on_port("::1", v4.port, banner)
        except OSError:
            v4.sock.close()
            continue
        with v4, v6:
            yield [v4, v6]
        return
    raise RuntimeError("no port free on both 127.0.0.1 and ::1")


def untouched(listeners: list[Listener]) -> bool:
    return not any(listener.connections for listener in listeners)


def production(monkeypatch: pytest.MonkeyPatch, allowed: str | None = None) -> None:
    monkeypatch.setenv("SIGHTLINE_ENV", "production")
    if allowed is None:
        monkeypatch.delenv("SIGHTLINE_ALLOWED_NETWORKS", raising=False)
    else:
        monkeypatch.setenv("SIGHTLINE_ALLOWED_NETWORKS", allowed)
    get_settings.cache_clear()


def server(host: str, port: int, security: str = "none") -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "username": SELLER,
        "password": "pw-1",
        "security": security,
    }


def imap_body(imap: dict[str, Any], smtp: dict[str, Any], verify: bool) -> dict[str, Any]:
    return {"kind": "imap", "email": SELLER, "imap": imap, "smtp": smtp, "verify": verify}


def leaked(answer: Any) -> bool:
    return SECRET in answer.get_data(as_text=True) or "SSH-2.0" in answer.get_data(as_text=True)


def mailboxes() -> list[Mailbox]:
    with session_scope() as session:
        rows = list(session.scalars(select(Mailbox)))
        session.expunge_all()
        return rows


# -- connect: the API and the forms, in production ---------------------------------------


def test_the_api_refuses_every_loopback_spelling_for_imap_and_smtp(
    env: Settings, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    production(monkeypatch)
    failures: list[tuple[object, ...]] = []
    with loopback_listeners() as listeners:
        port = listeners[0].port
        for host in LOOPBACK_SPELLINGS:
            for which in ("imap", "smtp"):
                for verify in (True, False):
                    good = server("8.8.8.8", 993)
                    body = imap_body(
                        server(host, port) if which == "imap" else good,
                        server(host, port) if which == "smtp" else good,
                        verify,
                    )
                    answer = api.post("/api/v1/mailboxes", body)
                    error = (answer.json or {}).get("error", {})
                    if not (
                        400 <= answer.status_code < 500
                        and which in error.get("fields", {})
                        and not leaked(answer)
                    ):
                        failures.append((host, which, verify, answer.status_code, error))
        assert untouched(listeners), listeners[0].connections + listeners[1].connections
    assert failures == []
    assert mailboxes() == []


def test_the_form_refuses_every_loopback_spelling(
    app: Flask, client: FlaskClient, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(app, SELLER, "Sellers", "--password", PASSWORD)
    production(monkeypatch)
    sign_in(client, SELLER)
    failures: list[tuple[object, ...]] = []
    with loopback_listeners() as listeners:
        port = str(listeners[0].port)
        for host in LOOPBACK_SPELLINGS:
            for which in ("imap", "smtp"):
                values = {
                    "email": SELLER,
                    "imap_host": "8.8.8.8",
                    "imap_port": "993",
                    "imap_security": "none",
                    "imap_password": "pw-1",
                    "smtp_host": "8.8.8.8",
                    "smtp_port": "587",
                    "smtp_security": "none",
                    f"{which}_host": host,
                    f"{which}_port": port,
                }
                token = csrf_from(client.get("/mailboxes/imap").get_data(as_text=True))
                answer = client.post("/mailboxes/imap", data={**values, "csrf_token": token})
                page = answer.get_data(as_text=True)
                marked = f'id="f-{which}_host"' in page and "aria-invalid" in page
                if not (answer.status_code == 422 and marked and not leaked(answer)):
                    failures.append((host, which, answer.status_code))
        assert untouched(listeners)
    assert failures == []
    assert mailboxes() == []


def test_the_api_and_the_form_refuse_every_loopback_ews_url(
    app: Flask, client: FlaskClient, env: Settings, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(app, SELLER, "Sellers", "--password", PASSWORD)
    production(monkeypatch)
    sign_in(client, SELLER)
    failures: list[tuple[object, ...]] = []
    with loopback_listeners(HTTP_ANSWER) as listeners:
        for template in LOOPBACK_URLS:
            url = template.format(port=listeners[0].port)
            for verify in (True, False):
                body = {
                    "email": SELLER,
                    "ews_url": url,
                    "auth": "basic",
                    "username": SELLER,
                    "password": "pw-1",
                    "verify": verify,
                }
                answer = api.post("/api/v1/mailboxes/exchange", body)
                if not (400 <= answer.status_code < 500 and not leaked(answer)):
                    failures.append(("api", url, verify, answer.status_code))
            token = csrf_from(client.get("/mailboxes").get_data(as_text=True))
            form = {k: v for k, v in body.items() if k != "verify"}
            answer = client.post("/mailboxes/exchange", data={**form, "csrf_token": token})
            if not (answer.status_code == 422 and not leaked(answer)):
                failures.append(("form", url, answer.status_code))
        assert untouched(listeners)
    assert failures == []
    assert mailboxes() == []


# -- what was saved is checked again when it is used ---------------------------------------


def saved_mailbox(api: ApiClient, body: dict[str, Any], path: str = "/api/v1/mailboxes") -> int:
    """Saved while loopback was allowed (SIGHTLINE_ENV=test), without verifying."""
    answer = api.post(path, body)
    assert answer.status_code == 201, answer.json
    return int(answer.json["id"])


def test_a_saved_mailbox_is_refused_by_sync_idle_and_send_in_production(
    env: Settings, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with loopback_listeners() as listeners:
        port = listeners[0].port
        mailbox_id = saved_mailbox(
            api, imap_body(server("127.0.0.1", port), server("localhost", port), False)
        )
        production(monkeypatch)
        sync_mailbox(mailbox_id)
        with session_scope() as session:
            mailbox = session.get(Mailbox, mailbox_id)
            assert mailbox is not None
            assert mailbox.status == MailboxStatus.ERROR
            assert "not allowed" in (mailbox.status_reason or "")
            assert SECRET not in (mailbox.status_reason or "")
        credentials = imap_body(server("127.0.0.1", port), server("localhost", port), False)
        provider = ImapProvider(SELLER, credentials)
        with pytest.raises(ProviderError, match="not allowed") as idle:
            provider.watch(threading.Event(), lambda: None)
        assert idle.value.permanent  # the listener stops watching; the sync reports it
        message = OutgoingMessage(
            from_addr=SELLER,
            to=["dana@acme.test"],
            subject="Hi",
            html="<p>Hi</p>",
            text="Hi",
            message_id="<refused@seller.test>",
        )
        with pytest.raises(ProviderError, match="SMTP server localhost: this address"):
            provider.send(message)
        assert untouched(listeners)


def test_a_saved_exchange_mailbox_is_refused_in_production(
    env: Settings, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    with loopback_listeners(HTTP_ANSWER) as listeners:
        url = f"http://localhost:{listeners[0].port}/EWS/Exchange.asmx"
        body = {
            "email": SELLER,
            "ews_url": url,
            "auth": "basic",
            "username": SELLER,
            "password": "pw-1",
            "verify": False,
        }
        mailbox_id = saved_mailbox(api, body, "/api/v1/mailboxes/exchange")
        production(monkeypatch)
        sync_mailbox(mailbox_id)
        with session_scope() as session:
            mailbox = session.get(Mailbox, mailbox_id)
            assert mailbox is not None and mailbox.status == MailboxStatus.ERROR
            assert "not allowed" in (mailbox.status_reason or "")
        with pytest.raises(ProviderError, match="not allowed"):
            ExchangeProvider(SELLER, {k: v for k, v in body.items() if k != "verify"}).verify()
        reconnect = api.post(f"/api/v1/mailboxes/{mailbox_id}/reconnect", body)
        assert reconnect.status_code == 422, reconnect.json
        assert reconnect.json["error"]["code"] == "address_not_allowed"
        assert untouched(listeners)


def test_an_operator_listed_network_is_reachable_in_production(
    env: Settings, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    production(monkeypatch, allowed="127.0.0.0/8")
    with loopback_listeners(b"* OK [CAPABILITY IMAP4rev1] ready\r\n") as listeners:
        body = imap_body(server("127.0.0.1", listeners[0].port), server("127.0.0.1", 1), True)
        answer = api.post("/api/v1/mailboxes", body)
        # Reached (and not a mail server that lets us in): the policy let it through.
        assert answer.status_code == 422
        assert answer.json["error"]["code"] == "mailbox_unreachable"
        assert listeners[0].connections


# -- outside production: what an allowed non-mail service said is never shown ------------


def test_a_service_that_does_not_speak_the_protocol_is_named_not_quoted(
    env: Settings, api: ApiClient, dovecot: Any
) -> None:
    real_imap = {**server(dovecot.host, dovecot.imap_port), "password": dovecot.password}
    with loopback_listeners() as ssh:
        port = ssh[0].port
        for which in ("imap", "smtp"):
            body = imap_body(
                server("127.0.0.1", port) if which == "imap" else real_imap,
                server("127.0.0.1", port),
                True,
            )
            answer = api.post("/api/v1/mailboxes", body)
            assert answer.status_code == 422, answer.json
            message = answer.json["error"]["message"]
            assert f"did not speak {which.upper()}" in message, message
            assert not leaked(answer), message
            assert list(answer.json["error"]["fields"]) == [which]
        assert ssh[0].connections  # allowed here, and reached: only the words changed
    with loopback_listeners(HTTP_ANSWER) as web:
        url = f"http://127.0.0.1:{web[0].port}/EWS/Exchange.asmx"
        answer = api.post(
            "/api/v1/mailboxes/exchange",
            {"email": SELLER, "ews_url": url, "auth": "basic", "username": SELLER, "password": "p"},
        )
        assert answer.status_code == 422, answer.json
        assert not leaked(answer), answer.json
        assert web[0].connections  # it was allowed, and reached: only the words changed
