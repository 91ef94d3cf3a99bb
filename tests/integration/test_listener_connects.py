"""A listener starting many IDLEs sets up at most CONNECTS_AT_ONCE connections at a time.

Started all at once, 10,000 IDLE threads were runnable together: they queued for
the GIL, logins waited minutes, live marks lapsed and Dovecot's login queue
overflowed. Here the IMAP server accepts connections and never greets, so every
connection stays in setup: the listener must stop opening new ones at the limit.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Mailbox, MailboxKind, Team
from worker import listener as listener_module
from worker.listener import Listener


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and says nothing, as a server choking on logins."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=200)
        self.port = self.server.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.server.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_connections_are_set_up_a_few_at_a_time(env: Settings, silent_server: SilentServer) -> None:
    mailboxes = listener_module.CONNECTS_AT_ONCE + 8
    server = {"host": "127.0.0.1", "port": silent_server.port, "security": "none"}
    with session_scope() as session:
        team = Team(name="Listener")
        session.add(team)
        session.flush()
        for n in range(mailboxes):
            login = {**server, "username": f"rep{n}@seller.test", "password": "pw"}
            session.add(
                Mailbox(
                    team_id=team.id,
                    kind=MailboxKind.IMAP,
                    email=f"rep{n}@seller.test",
                    credentials_encrypted=encrypt_json({"imap": login, "smtp": login}),
                )
            )
    listener = Listener(shard=0, shards=1)
    listener.refresh()
    deadline = time.monotonic() + 10
    while len(silent_server.accepted) < listener_module.CONNECTS_AT_ONCE:
        assert time.monotonic() < deadline, f"only {len(silent_server.accepted)} connected"
        time.sleep(0.05)
    time.sleep(1.0)  # time enough for the others to connect, were they let
    assert len(silent_server.accepted) == listener_module.CONNECTS_AT_ONCE
    assert len(listener.watches) == mailboxes
    silent_server.close()  # the logins fail at once: the watches back off, then stop
    listener.stop_watches()
    assert len(listener.hub) == 0
