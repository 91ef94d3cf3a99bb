"""Mail a server announces in the same write as IDLE's continuation is not left for 30 s.

Dovecot answers IDLE with "+ idling" and, when mail arrived while the previous
IDLE was ending, "* n EXISTS" right after it; under load both arrive in one
read. imaplib's reader then holds the EXISTS line in its buffer, the socket has
nothing more to say, and an IDLE that waited on the socket (the listener's
selector, or imapclient's idle_check) learned of the mail only at the round's
DONE, 30 s later: the p99 of 30.3 s in `bench.providers_scale --mode imap`.

Real Dovecot cannot be made to put both answers in one TCP segment on demand,
so this server is a script that answers as Dovecot words it and sends those two
together, over a real socket to the real provider (rounds of PUSH_ALIVE_SECONDS).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest

from tests.fakes.httpfake import provider_ca, provider_ca_path
from worker.sync.imap import ImapProvider

GREETING = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+] ready.\r\n"


class OneWriteServer:
    """Speaks IMAP to one client; answers IDLE with '+ idling' and '* 2 EXISTS' in one send.

    Over TLS too (`context`): there both answers arrive in one TLS record, and what
    the reader has not taken waits decrypted in the TLS layer, not in the socket.
    """

    def __init__(self, context: ssl.SSLContext | None) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.context = context
        self.idles = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.server.accept()
            if self.context is not None:
                conn = self.context.wrap_socket(conn, server_side=True)
            with conn:
                conn.sendall(GREETING)
                reader = conn.makefile("rb")
                while line := reader.readline():
                    tag, _, rest = line.strip().partition(b" ")
                    command = rest.split(b" ")[0].upper()
                    if command == b"LOGIN":
                        conn.sendall(tag + b" OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n")
                    elif command == b"CAPABILITY":
                        conn.sendall(b"* CAPABILITY IMAP4rev1 IDLE\r\n" + tag + b" OK done\r\n")
                    elif command == b"EXAMINE":
                        conn.sendall(
                            b"* FLAGS (\\Seen)\r\n* 1 EXISTS\r\n* 0 RECENT\r\n"
                            b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"
                            b"* OK [UIDNEXT 2] Predicted next UID\r\n"
                            + tag
                            + b" OK [READ-ONLY] Examine completed (0.001 + 0.000 secs).\r\n"
                        )
                    elif command == b"IDLE":
                        self.idles += 1
                        extra = b"* 2 EXISTS\r\n* 1 RECENT\r\n" if self.idles == 1 else b""
                        conn.sendall(b"+ idling\r\n" + extra)
                        idle_tag = tag
                    elif line.strip().upper() == b"DONE":
                        conn.sendall(idle_tag + b" OK Idle completed (0.001 + 1.000 secs).\r\n")
                    elif command == b"LOGOUT":
                        conn.sendall(b"* BYE Logging out\r\n" + tag + b" OK Logout completed.\r\n")
                        return

    def close(self) -> None:
        self.server.close()


@pytest.fixture(params=["none", "tls"])
def security(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "tls":  # the client trusts the test CA as it would a public one
        monkeypatch.setenv("SSL_CERT_FILE", provider_ca_path())
    return str(request.param)


@pytest.fixture
def one_write_server(security: str) -> Iterator[OneWriteServer]:
    context = None
    if security == "tls":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        provider_ca().issue_cert("127.0.0.1").configure_cert(context)
    server = OneWriteServer(context)
    yield server
    server.close()


def test_mail_announced_with_the_continuation_is_seen_at_once(
    one_write_server: OneWriteServer, security: str
) -> None:
    login = {
        "host": "127.0.0.1",
        "port": one_write_server.port,
        "security": security,
        "username": "rep@seller.test",
        "password": "pw",
    }
    provider = ImapProvider("rep@seller.test", {"imap": login, "smtp": login})
    provider.push_alive = lambda: None  # the listener's round length, not the 25-minute one
    stop, changes = threading.Event(), list[float]()
    started = time.monotonic()
    watching = threading.Thread(
        target=provider.watch, args=(stop, lambda: changes.append(time.monotonic())), daemon=True
    )
    watching.start()
    try:
        deadline = started + 5
        while not changes and time.monotonic() < deadline:
            time.sleep(0.02)
        # Missed, it would be announced at the round's DONE, PUSH_ALIVE_SECONDS (30 s) later.
        assert changes, "the EXISTS sent with '+ idling' was not announced within 5 s"
        assert changes[0] - started < 2.0
    finally:
        stop.set()
        watching.join(timeout=5)
        provider.close()
