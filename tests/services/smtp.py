"""A real SMTP server for the tests that delivers into Dovecot; its envelope log.

Owns: starting and stopping the `tests.services.smtp_server` process (see that
module for the protocol it speaks, what it logs and its failure-injection
domains), its throwaway TLS certificate, and reading its log back.

It runs as its own process, not a thread in pytest: tests fork and kill workers,
and a server living in the test process would be forked and killed with them.

    smtp = SmtpServer(lmtp_host=dovecot.host, lmtp_port=dovecot.lmtp_port,
                      password=dovecot.password).start()
    with smtp.connect("rep@sightline.test") as client:   # logged in
        client.sendmail("rep@sightline.test", [prospect], raw)
    dovecot.wait_for_message(prospect, has_message_id(message_id))
    assert [e.message_id for e in smtp.sent_to(prospect)] == [message_id]
"""

from __future__ import annotations

import json
import smtplib
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.services import process
from tests.services.process import ServiceError

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LoggedEnvelope:
    """One outcome the SMTP server logged (see `tests.services.smtp_server`)."""

    time: float
    accepted: bool
    reply: str
    mail_from: str | None
    rcpt_tos: tuple[str, ...]
    message_id: str | None
    auth_login: str | None
    size: int


class SmtpServer:
    """The SMTP server process on a free 127.0.0.1 port; `start()`, then `stop()`.

    Args:
        lmtp_host, lmtp_port: where accepted mail is delivered (Dovecot's LMTP), or
        deliver_command: the IMAP server's delivery program, run once per recipient
            with ``{rcpt}`` replaced and the message on stdin
            (`ImapTestServer.smtp_delivery()` gives one or the other).
        password: the one password every AUTH login must give.
        starttls: offer STARTTLS with a certificate for `localhost` and 127.0.0.1,
            issued by a throwaway CA (`ca_cert_path`, `client_tls_context()`).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        password: str,
        lmtp_host: str = "127.0.0.1",
        lmtp_port: int = 0,
        deliver_command: list[str] | None = None,
        starttls: bool = True,
    ) -> None:
        if bool(lmtp_port) == bool(deliver_command):
            raise ValueError("give exactly one of lmtp_port or deliver_command")
        self.lmtp_host = lmtp_host
        self.lmtp_port = lmtp_port
        self.deliver_command = deliver_command
        self.password = password
        self.starttls = starttls
        self.port = 0
        self.root = Path()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The server's own log (stdout, stderr, aiosmtpd's messages)."""
        return self.root / "smtp.log"

    @property
    def envelope_log_path(self) -> Path:
        """The JSON-lines log of every accepted or refused envelope."""
        return self.root / "envelopes.jsonl"

    @property
    def ca_cert_path(self) -> Path:
        """PEM of the CA that issued the STARTTLS certificate (for clients to trust)."""
        return self.root / "ca.pem"

    def _write_certificate(self) -> list[str]:
        import trustme

        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_cert_path))
        cert = ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.root / "server.pem"))
        return ["--tls-cert", str(self.root / "server.pem")]

    def start(self, timeout: float = 15.0) -> SmtpServer:
        """Start the server and wait until it listens.

        Raises:
            ServiceError: it did not start; the message ends with its log.
        """
        self.root = process.service_dir("smtp")
        ready = self.root / "port"
        args = [
            sys.executable, "-m", "tests.services.smtp_server",
            "--password", self.password,
            "--log", str(self.envelope_log_path),
            "--ready-file", str(ready),
        ]  # fmt: skip
        if self.deliver_command:
            args += ["--deliver-command", json.dumps(self.deliver_command)]
        else:
            args += ["--lmtp-host", self.lmtp_host, "--lmtp-port", str(self.lmtp_port)]
        if self.starttls:
            args += self._write_certificate()
        self.envelope_log_path.touch()
        self._proc = process.spawn(args, log_path=self.log_path, cwd=REPO_ROOT)
        try:
            process.wait_until(
                ready.exists,
                what="the SMTP server",
                proc=self._proc,
                log_path=self.log_path,
                timeout=timeout,
            )
        except ServiceError:
            self.stop()
            raise
        self.port = int(ready.read_text())
        return self

    def stop(self) -> None:
        if self._proc is not None:
            process.stop(self._proc)
            self._proc = None
        if self.root != Path():
            process.remove_dir(self.root)

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def client_tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's STARTTLS certificate."""
        return ssl.create_default_context(cafile=str(self.ca_cert_path))

    def connect(self, login: str | None = None, *, starttls: bool = False) -> smtplib.SMTP:
        """An SMTP client connection, logged in as `login` with the shared password."""
        client = smtplib.SMTP(self.host, self.port, local_hostname="localhost", timeout=30)
        try:
            if starttls:
                client.starttls(context=self.client_tls_context())
            if login is not None:
                client.login(login, self.password)
        except BaseException:
            client.close()
            raise
        return client

    def set_over_quota(self, *logins: str) -> None:
        """These logins (none: nobody) get Gmail's daily-quota answer from now on."""
        (self.envelope_log_path.parent / "over-quota.txt").write_text("\n".join(logins))

    def log(self) -> list[LoggedEnvelope]:
        """Every outcome so far, accepted or refused, oldest first."""
        entries = []
        for line in self.envelope_log_path.read_text().splitlines():
            raw = json.loads(line)
            raw["rcpt_tos"] = tuple(raw["rcpt_tos"])
            entries.append(LoggedEnvelope(**raw))
        return entries

    def sent_log(self) -> list[LoggedEnvelope]:
        """Every envelope the server accepted (and so delivered), oldest first."""
        return [entry for entry in self.log() if entry.accepted]

    def sent_to(self, address: str) -> list[LoggedEnvelope]:
        """Accepted envelopes with `address` among their recipients (case-insensitive)."""
        wanted = address.lower()
        return [e for e in self.sent_log() if wanted in (r.lower() for r in e.rcpt_tos)]
