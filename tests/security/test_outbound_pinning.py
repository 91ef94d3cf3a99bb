"""Pinning: a connection goes to the address the outbound policy checked.

A name is resolved once, every address checked, and the socket connected to a
checked address; nothing resolves it again for that connection, so a DNS
server that answers an allowed address to the check and an internal one to the
connection (DNS rebinding) gets nowhere. Here `socket.getaddrinfo`, the system
resolver, is replaced by one that answers as such a DNS server would (first
127.0.0.1, which the operator allows, then 127.0.0.2, which is not allowed);
nothing of ours is replaced. Listeners on both addresses show where the
connection went: IMAP (imapclient), SMTP (smtplib) and HTTP (requests, as EWS
and Salesforce use it).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import requests

from config import Settings
from core.outbound import OutboundError
from core.outbound_http import PinnedHTTPAdapter
from tests.security.listeners import HTTP_ANSWER, Listener
from tests.security.test_outbound_mail import production, server
from worker.sync.base import ProviderError
from worker.sync.imap_connect import open_imap, open_smtp


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """One engine is enough: the policy does not touch the database."""
    return sqlite_database_url


class RebindingResolver:
    """Answers `name` with `first` once, then with `then`: a DNS-rebinding server's trick."""

    def __init__(self, name: str, first: str, then: str) -> None:
        self.name, self.first, self.then = name, first, then
        self.lookups = 0
        self.real: Callable[..., Any] = socket.getaddrinfo

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != self.name:
            return self.real(host, port, *args, **kwargs)
        self.lookups += 1
        address = self.first if self.lookups == 1 else self.then
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))]


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch, env: Settings) -> RebindingResolver:
    """rebind.test: 127.0.0.1 (the operator allows it) first, then 127.0.0.2 (not allowed)."""
    production(monkeypatch, allowed="127.0.0.1/32")
    resolver = RebindingResolver("rebind.test", "127.0.0.1", "127.0.0.2")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


def two_listeners(banner: bytes) -> tuple[Listener, Listener]:
    checked = Listener("127.0.0.1", banner)
    return checked, Listener.on_port("127.0.0.2", checked.port, banner)


@pytest.mark.parametrize("protocol", ["imap", "smtp"])
def test_mail_connections_go_to_the_checked_address(
    rebinding: RebindingResolver, protocol: str
) -> None:
    banner = b"* OK ready\r\n" if protocol == "imap" else b"220 ready ESMTP\r\n"
    checked, rebound = two_listeners(banner)
    with checked, rebound:
        opener: Any = open_imap if protocol == "imap" else open_smtp
        extra = {} if protocol == "imap" else {"helo": "localhost"}
        with contextlib.suppress(ProviderError):  # a listener is not a mail server
            opener(
                server("rebind.test", checked.port),
                timeout=3,
                ssl_context=ssl.create_default_context,
                **extra,
            )
    assert rebinding.lookups == 1  # resolved once: the connection did not ask again
    assert checked.connections and not rebound.connections


def test_http_connections_go_to_the_checked_address(rebinding: RebindingResolver) -> None:
    checked, rebound = two_listeners(HTTP_ANSWER)
    session = requests.Session()
    session.mount("http://", PinnedHTTPAdapter(purpose="Exchange"))
    with checked, rebound:
        answer = session.get(f"http://rebind.test:{checked.port}/EWS", timeout=5)
        assert answer.status_code == 500
        session.close()  # a new connection is checked again: the name now says 127.0.0.2
        with pytest.raises(OutboundError, match="not allowed"):
            session.get(f"http://rebind.test:{checked.port}/EWS", timeout=5)
    assert len(checked.connections) == 1 and not rebound.connections
