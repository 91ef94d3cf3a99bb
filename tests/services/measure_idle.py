"""How late each test server's IDLE reports new mail: `python -m tests.services.measure_idle`.

For each server (Dovecot, Courier-IMAP, GNU Mailutils; their default settings,
as the suite runs them), the provider's own `ImapProvider.watch` holds IDLE on
an INBOX, messages are delivered the server's own way at spread-out moments,
and each delay is what `worker.sync.push_latency` measures in production: when
the push said so, minus the message's INTERNALDATE. A message IDLE has not
reported after `--wait` seconds counts as "none".

Options: --messages N (default 5), --wait SECONDS (default 90), --server NAME
(repeatable; default all). Needs root and scripts/test-prereqs.sh, like the suite.
The delays printed are what tests/unit/test_push_latency.py replays.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid

from tests.services.courier import CourierServer
from tests.services.dovecot import DovecotServer
from tests.services.imap_server import ImapTestServer, unique_address
from tests.services.mailutils import MailutilsServer
from worker.sync.imap import ImapProvider

SERVERS: dict[str, type[ImapTestServer]] = {
    "dovecot": DovecotServer,
    "courier": CourierServer,
    "mailutils": MailutilsServer,
}


def _message(to: str, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "dana@acme.test", to, f"Probe {n}"
    msg["Message-ID"] = make_msgid(domain="acme.test")
    msg.set_content("probe\n")
    return msg.as_bytes()


def _arrival(server: ImapTestServer, user: str) -> datetime:
    """INTERNALDATE of the newest message, as the server keeps it."""
    with server.imap(user) as client:
        client.normalise_times = False
        client.select_folder("INBOX", readonly=True)
        newest = max(client.search("ALL"))
        when = client.fetch([newest], ["INTERNALDATE"])[newest][b"INTERNALDATE"]
        assert isinstance(when, datetime)
        return when.astimezone(UTC)


def measure(server: ImapTestServer, messages: int, wait: float) -> list[float | None]:
    user = unique_address("seller.test", "rep")
    server.ensure_user(user)
    provider = ImapProvider(user, _credentials(server, user))
    told = threading.Event()
    stop = threading.Event()
    watcher = threading.Thread(target=provider.watch, args=(stop, told.set), daemon=True)
    watcher.start()
    time.sleep(1.0)
    delays: list[float | None] = []
    try:
        for n in range(messages):
            time.sleep(random.uniform(0.0, 5.0))  # not in step with a polling server
            told.clear()
            server.deliver(user, _message(user, n))
            arrived = _arrival(server, user)
            if told.wait(wait):
                delays.append(round(datetime.now(UTC).timestamp() - arrived.timestamp(), 1))
            else:
                delays.append(None)
            print(f"  {server.name} message {n + 1}: {delays[-1]}", flush=True)
    finally:
        stop.set()
        watcher.join(timeout=5)
        provider.close()
    return delays


def _credentials(server: ImapTestServer, user: str) -> dict[str, object]:
    imap = {
        "host": server.host,
        "port": server.imap_port,
        "username": user,
        "password": server.password,
        "security": "none",
    }
    return {"imap": imap, "smtp": {**imap, "port": 1}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=5)
    parser.add_argument("--wait", type=float, default=90.0)
    parser.add_argument("--server", action="append", choices=sorted(SERVERS))
    args = parser.parse_args(argv)
    for name in args.server or list(SERVERS):
        with SERVERS[name]() as server:
            delays = measure(server, args.messages, args.wait)
        shown = ", ".join("none" if d is None else f"{d:.1f}" for d in delays)
        print(f"{name}: IDLE delays (s) = [{shown}]", flush=True)


if __name__ == "__main__":
    main()
