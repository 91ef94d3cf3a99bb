"""A team's server that answers a byte at a time holds no `sync` thread past the deadline.

The server stands in for a slow or hostile IMAP or Exchange server a team typed
in: it greets (IMAP) or answers (HTTP) at once, then sends one byte every
`TRICKLE_SECONDS`, each well within the socket's own timeout, and never ends the
line. Without a deadline for the sync as a whole the drainer's thread waits
for the line for as long as the server likes; a handful of such mailboxes
would hold every thread of a `sync` process and stop every team's replies.

Each test runs the real sync (`engine.sync_now`, as a drainer thread does) on
a thread of its own and gives it the deadline plus a margin: it must return,
say why on the mailbox, and wait before the next try. The connection-level
tests drive `core.outbound_deadline` over real loopback sockets, TLS included.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import pytest
import requests
import trustme

from config import Settings, get_settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Mailbox, MailboxKind, MailboxStatus, Team, utcnow
from core.outbound import open_socket, resolve
from core.outbound_deadline import CHECK_SECONDS, cut_off, deadline
from core.outbound_http import PinnedHTTPAdapter
from worker.sync import connecting, wanted
from worker.sync.connecting import ConnectError
from worker.sync.engine import backoff_remaining, sync_now

TRICKLE_SECONDS = 0.2
DEADLINE_SECONDS = 2
# The sync must be back within its deadline, the watchdog's look and a provider's
# clean-up; a thread still waiting after this is held by the server.
MARGIN_SECONDS = 3.0

IMAP_GREETING = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n"
HTTP_START = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\nX-Slow: "


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """One engine is enough: the deadline does not touch the database."""
    return sqlite_database_url


class TrickleServer:
    """Accepts connections; on each, after the client's first bytes (or at once when
    `greeting_first`), sends `start`, then one byte every TRICKLE_SECONDS until closed."""

    def __init__(
        self, start: bytes, *, greeting_first: bool, tls: ssl.SSLContext | None = None
    ) -> None:
        self.start, self.greeting_first, self.tls = start, greeting_first, tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.accepted = 0
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(30)
            if not self.greeting_first:
                conn.recv(65536)
            conn.sendall(self.start)
            if self.greeting_first:
                conn.recv(65536)  # the client's first command: answer it a byte at a time
            while not self.stopped.wait(TRICKLE_SECONDS):
                conn.sendall(b"x")

    def __enter__(self) -> TrickleServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopped.set()
        self.sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


def run_with_margin(work: Any) -> tuple[Any, float]:
    """(what `work()` returned, seconds it took); fails if it is still running after the
    deadline plus the margin (the thread is left to end when the server closes)."""
    result: list[Any] = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()
    thread.join(timeout=DEADLINE_SECONDS + MARGIN_SECONDS)
    assert not thread.is_alive(), (
        f"still held by the server {DEADLINE_SECONDS + MARGIN_SECONDS:.0f} s on"
    )
    assert result, "the work raised instead of returning"
    return result[0], time.monotonic() - started


@pytest.fixture
def short_deadline(env: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("SIGHTLINE_SYNC_DEADLINE_SECONDS", str(DEADLINE_SECONDS))
    get_settings.cache_clear()
    yield get_settings()


def mailbox_for(kind: MailboxKind, credentials: dict[str, Any]) -> int:
    with session_scope() as session:
        team = Team(name="Slowpoke")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id,
            kind=kind,
            email="rep@slow.test",
            credentials_encrypted=encrypt_json(credentials),
            created_at=utcnow(),
        )
        session.add(mailbox)
        session.flush()
        return mailbox.id


def imap_credentials(port: int) -> dict[str, Any]:
    server = {"username": "rep@slow.test", "password": "pw", "security": "none"}
    return {
        "imap": {**server, "host": "127.0.0.1", "port": port},
        "smtp": {**server, "host": "127.0.0.1", "port": port},
    }


def ews_credentials(port: int) -> dict[str, Any]:
    return {
        "ews_url": f"http://127.0.0.1:{port}/EWS/Exchange.asmx",
        "auth": "basic",
        "username": "rep@slow.test",
        "password": "pw",
    }


@pytest.mark.parametrize(
    ("kind", "start", "greeting_first", "credentials"),
    [
        (MailboxKind.IMAP, IMAP_GREETING, True, imap_credentials),
        (MailboxKind.EXCHANGE, HTTP_START, False, ews_credentials),
    ],
    ids=["imap", "ews"],
)
def test_a_server_answering_a_byte_at_a_time_is_cut_off_at_the_deadline(
    short_deadline: Settings,
    kind: MailboxKind,
    start: bytes,
    greeting_first: bool,
    credentials: Any,
) -> None:
    with TrickleServer(start, greeting_first=greeting_first) as server:
        mailbox_id = mailbox_for(kind, credentials(server.port))
        outcome, took = run_with_margin(lambda: sync_now(mailbox_id, lock_wait=0))

    assert server.accepted >= 1
    assert outcome["status"] == "too_slow"
    assert took >= DEADLINE_SECONDS
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        assert mailbox.status == MailboxStatus.ERROR
        assert "still answering when the sync's time was up" in (mailbox.status_reason or "")
        assert mailbox.last_synced_at is None
    # The mailbox waits before its next try, and that try is scheduled, not lost.
    assert backoff_remaining(mailbox_id) > DEADLINE_SECONDS
    assert mailbox_id in wanted.scheduled()
    assert sync_now(mailbox_id, lock_wait=0)["status"] == "backoff"


def echo_server() -> tuple[socket.socket, threading.Thread]:
    listening = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listening.accept()
            with conn:
                while data := conn.recv(1024):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listening, thread


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for "localhost", from a throwaway CA."""
    authority = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client


def test_a_connection_is_cut_at_the_deadline_even_after_tls_took_its_descriptor(
    env: Settings,
) -> None:
    context, client_context = tls_contexts()
    with TrickleServer(b"* OK", greeting_first=True, tls=context) as server:
        destination = resolve("127.0.0.1", server.port, purpose="IMAP")

        def read_until_cut() -> bytes:
            with deadline(1.0) as limit:
                raw = open_socket(destination, timeout=30)
                with client_context.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall(b"a LOGIN x y\r\n")
                    got = b""
                    with contextlib.suppress(OSError):
                        while chunk := tls.recv(1):
                            got += chunk
                    assert limit.expired and limit.cut
                    return got

        got, took = run_with_margin(read_until_cut)
    assert got.startswith(b"* OKx")  # it was answering, a byte at a time, until cut
    assert 1.0 <= took < 1.0 + CHECK_SECONDS + 1.0


def test_connections_of_a_block_that_ended_and_of_other_threads_are_left_alone(
    env: Settings,
) -> None:
    listening, serving = echo_server()
    destination = resolve("127.0.0.1", listening.getsockname()[1], purpose="IMAP")
    try:
        with deadline(0.3):
            kept = open_socket(destination, timeout=5)
        other: list[socket.socket] = []
        with deadline(0.3):  # another thread's connection: not this block's
            opener = threading.Thread(target=lambda: other.append(open_socket(destination, 5)))
            opener.start()
            opener.join()
            time.sleep(0.3 + 2 * CHECK_SECONDS)
        time.sleep(2 * CHECK_SECONDS)
        kept.sendall(b"still here")
        assert kept.recv(1024) == b"still here"
        # The other thread's connection went to the same listener, which serves one:
        # it is open (not shut down), the listener just never reads it.
        other[0].setblocking(False)
        with pytest.raises(BlockingIOError):
            other[0].recv(1)
    finally:
        kept.close()
        for sock in other:
            sock.close()
        listening.close()
        serving.join(timeout=5)


def test_a_block_that_opened_no_connection_is_never_cut_off(env: Settings) -> None:
    # A Gmail or Graph sync reaches the operator's endpoints, not through open_socket:
    # a failure after its deadline is that failure, not a slow server of the team's.
    with deadline(0.1) as limit:
        time.sleep(0.1 + 3 * CHECK_SECONDS)
        assert limit.expired
        assert not limit.cut
        assert not cut_off()


def test_connecting_to_a_server_answering_a_byte_at_a_time_fails_at_the_deadline(
    short_deadline: Settings,
) -> None:
    """The connect form's login check holds a web worker no longer than a sync would."""
    with session_scope() as session:
        team = Team(name="Slowpoke")
        session.add(team)
        session.flush()
        team_id = team.id
    with TrickleServer(IMAP_GREETING, greeting_first=True) as imap:

        def connect() -> ConnectError:
            with session_scope() as session, pytest.raises(ConnectError) as refused:
                connecting.connect_imap(
                    session,
                    team_id=team_id,
                    user_id=None,
                    email="rep@slow.test",
                    credentials=imap_credentials(imap.port),
                )
            return refused.value

        imap_refusal, _ = run_with_margin(connect)
    with TrickleServer(HTTP_START, greeting_first=False) as ews:

        def verify() -> ConnectError:
            with pytest.raises(ConnectError) as refused:
                connecting.verify_exchange("rep@slow.test", ews_credentials(ews.port))
            return refused.value

        ews_refusal, _ = run_with_margin(verify)

    for refusal, field in ((imap_refusal, "imap"), (ews_refusal, "ews_url")):
        assert refusal.code == "mailbox_unreachable"
        assert refusal.try_later
        assert f"still answering after {DEADLINE_SECONDS} s" in refusal.fields[field]
    with session_scope() as session:  # nothing was saved
        assert session.query(Mailbox).filter_by(team_id=team_id).count() == 0


def test_a_pooled_connection_taken_up_again_inside_the_block_is_cut_too(
    env: Settings, tmp_path: Any
) -> None:
    """EWS keeps a connection between requests: one opened before the block, reused in
    it, is the block's as well (core.outbound_http adopts it as the pool hands it out)."""
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_tls)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    listening = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            raw, _ = listening.accept()
            with server_tls.wrap_socket(raw, server_side=True) as conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                conn.recv(65536)  # the second request, on the same connection
                conn.sendall(HTTP_START)
                while not stop.wait(TRICKLE_SECONDS):
                    conn.sendall(b"x")

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    url = f"https://127.0.0.1:{listening.getsockname()[1]}/EWS/Exchange.asmx"
    session = requests.Session()
    session.mount("https://", PinnedHTTPAdapter(purpose="Exchange"))
    try:
        assert session.get(url, verify=str(bundle), timeout=30).text == "ok"  # before the block

        def second() -> bool:
            with deadline(1.0) as limit:
                # Cut off, http.client takes the headers read so far for all of them
                # (EWS then fails on the empty body), or the read fails: either way it ends.
                with contextlib.suppress(requests.RequestException):
                    session.get(url, verify=str(bundle), timeout=30)
                return limit.cut

        cut, took = run_with_margin(second)
        assert cut
        assert 1.0 <= took < 1.0 + CHECK_SECONDS + 1.0
    finally:
        stop.set()
        session.close()
        listening.close()
        serving.join(timeout=5)
