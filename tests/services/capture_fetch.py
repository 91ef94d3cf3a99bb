"""Capture how real IMAP servers answer our FETCH: `python -m tests.services.capture_fetch`.

Starts the session's own Dovecot, Courier and GNU Mailutils (as root, after
scripts/test-prereqs.sh), delivers one fixed message into each, sends the exact
commands `worker.sync.imap` sends, and writes every untagged response between
command and tagged OK, byte for byte, to tests/fixtures/imap/<server>-<version>.<what>.imap.
tests/unit/test_imap_fetch.py reads those files through imaplib and imapclient
(the libraries the provider uses) and checks what the parser finds in them.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from tests.services.courier import COURIER_IMAP_ROOT, CourierServer
from tests.services.dovecot import DovecotServer
from tests.services.imap_server import ImapTestServer
from tests.services.mailutils import MailutilsServer
from worker.sync.imap import HEADER_NAMES
from worker.sync.imap_fetch import header_fields_request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imap"
USER = "rep@seller.test"
MESSAGE = (
    b"Return-Path: <dana@acme.test>\r\n"
    b"From: Dana Scully <dana@acme.test>\r\n"
    b"To: rep@seller.test\r\n"
    b"Subject: Re: Hello Dana\r\n"
    b"Date: Sun, 06 Dec 2026 03:00:00 +0000\r\n"
    b"Message-ID: <reply.1@acme.test>\r\n"
    b"In-Reply-To: <step.1@seller.test>\r\n"
    b"References: <older@acme.test> <step.1@seller.test>\r\n"
    b"X-Not-Asked-For: yes\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Yes, happy to talk on Tuesday.\r\n"
)
# What imapclient sends for the provider's header FETCH and its body FETCH.
COMMANDS = {
    "headers": b"UID FETCH 1 ("
    + header_fields_request(HEADER_NAMES)
    + b" RFC822.SIZE INTERNALDATE)",
    "body": b"UID FETCH 1 (BODY.PEEK[]<0.100000>)",
}


def _version(server: ImapTestServer) -> str:
    if isinstance(server, DovecotServer):
        out = subprocess.run(["dovecot", "--version"], capture_output=True, check=True)
        return out.stdout.decode().split()[0]
    if isinstance(server, CourierServer):
        out = subprocess.run(
            [str(COURIER_IMAP_ROOT / "usr/bin/imapd"), "--version"],
            capture_output=True,
            check=False,
        )
        return out.stdout.decode().split("Courier-IMAP ")[1].split(")")[0]
    out = subprocess.run(["imap4d", "--version"], capture_output=True, check=True)
    return out.stdout.decode().splitlines()[0].rsplit(" ", 1)[1].rstrip(")")


class _Wire:
    def __init__(self, server: ImapTestServer) -> None:
        self.sock = socket.create_connection((server.host, server.imap_port), timeout=10)
        self.buffer = b""
        self.tags = 0
        self._read_until(b"\r\n")

    def _read_until(self, end: bytes) -> bytes:
        while end not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buffer += chunk
        cut = self.buffer.index(end) + len(end)
        data, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return data

    def command(self, text: bytes) -> bytes:
        """Send one command; return the untagged responses, verbatim (literals included)."""
        self.tags += 1
        tag = b"C%d" % self.tags
        self.sock.sendall(tag + b" " + text + b"\r\n")
        untagged = b""
        while True:
            line = self._read_until(b"\r\n")
            while line.endswith(b"}\r\n"):  # a literal follows: take it whole
                size = int(line[line.rindex(b"{") + 1 : -3])
                while len(self.buffer) < size:
                    self.buffer += self.sock.recv(65536)
                line += self.buffer[:size]
                self.buffer = self.buffer[size:]
                line += self._read_until(b"\r\n")
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(f"{text!r} failed: {line!r}")
                return untagged
            untagged += line


def capture(server: ImapTestServer) -> list[Path]:
    server.deliver(USER, MESSAGE)
    wire = _Wire(server)
    wire.command(b'LOGIN "' + USER.encode() + b'" "' + server.password.encode() + b'"')
    wire.command(b"EXAMINE INBOX")
    written = []
    for what, command in COMMANDS.items():
        path = FIXTURES / f"{server.name}-{_version(server)}.{what}.imap"
        path.write_bytes(wire.command(command))
        written.append(path)
    wire.command(b"LOGOUT")
    return written


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for server in (DovecotServer(), CourierServer(), MailutilsServer()):
        with server:
            for path in capture(server):
                print(f"wrote {path.relative_to(FIXTURES.parents[2])}")


if __name__ == "__main__":
    main()
