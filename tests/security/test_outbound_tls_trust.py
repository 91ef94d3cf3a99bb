"""TLS on pinned HTTP connections: one trust store per process, and it still decides.

`core.outbound_http` hands every pinned TLS connection (EWS, Salesforce) one
shared, verifying context per CA bundle instead of a context built and loaded
per connection. Sharing must change nothing a certificate check decides: a
server whose certificate the bundle trusts is reached, one signed by another CA
or issued for another name is refused, every time, on new connections too.
Real TLS servers (tests.fakes.httpfake, certificates from trustme); the system
resolver answers one made-up name with the server's address.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trustme

from config import Settings
from core.outbound_http import PinnedHTTPAdapter
from tests.fakes.httpfake import FakeHttpServer, provider_ca_path


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """One engine is enough: TLS does not touch the database."""
    return sqlite_database_url


def _hello(environ: dict[str, object], start_response: object) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
    return [b"hello"]


@pytest.fixture
def served(env: Settings) -> Iterator[FakeHttpServer]:
    """A TLS server whose certificate (127.0.0.1, localhost) the provider CA signed."""
    server = FakeHttpServer(_hello, name="tls-trust").start()
    yield server
    server.stop()


def pinned_session() -> requests.Session:
    session = requests.Session()
    session.mount("https://", PinnedHTTPAdapter(purpose="Exchange"))
    return session


def test_a_trusted_certificate_is_reached_on_every_new_connection(
    served: FakeHttpServer,
) -> None:
    session = pinned_session()
    for _ in range(3):
        answer = session.get(served.url + "/", timeout=5, verify=provider_ca_path())
        assert answer.text == "hello"
        session.close()  # the next request opens a new connection with the shared context


def test_a_certificate_from_another_ca_or_for_another_name_is_refused(
    served: FakeHttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    # (verify= on the request: a session's own is overridden by REQUESTS_CA_BUNDLE.)
    trusted = pinned_session()
    ours = provider_ca_path()
    assert trusted.get(served.url + "/", timeout=5, verify=ours).ok  # its context made first
    for _ in range(2):
        with pytest.raises(requests.exceptions.SSLError):
            pinned_session().get(served.url + "/", timeout=5, verify=str(other))
    # The certificate names 127.0.0.1 and localhost; other.test is made to reach it too.
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, *a, **k: real("127.0.0.1" if host == "other.test" else host, *a, **k),
    )
    wrong_name = served.url.replace("127.0.0.1", "other.test")
    with pytest.raises(requests.exceptions.SSLError):
        pinned_session().get(wrong_name + "/", timeout=5, verify=ours)
