"""The SMTP server process: `python -m tests.services.smtp_server --help`.

A real SMTP server (aiosmtpd) for the test suite, run as its own process by
`tests.services.smtp.SmtpServer`. It requires AUTH (PLAIN or LOGIN) with the
shared password, for any username, over plaintext on loopback; STARTTLS is offered
when given a certificate. Every accepted message is delivered, byte for byte (the
Message-ID is never added or rewritten), to each recipient's INBOX before the
server answers 250: through LMTP (Dovecot), or by running the IMAP server's own
delivery program once per recipient with the message on stdin (`--deliver-command`,
a JSON list whose ``{rcpt}`` and ``{from}`` are replaced: Courier's deliverquota,
Mailutils' putmail). So when `sendmail()` returns, the message is in the recipient's
mailbox and in the log.

The log is a JSON-lines file with one object per outcome, written before the reply:

    {"time": 1700000000.1, "accepted": true, "reply": "250 2.0.0 ...",
     "mail_from": "...", "rcpt_tos": ["..."], "message_id": "<...>" or null,
     "auth_login": "...", "size": 1234}

Failure injection, by recipient domain (the message is not delivered anywhere):

    anyone@reject.smtp.test          RCPT answered 550 5.1.1 (permanent)
    anyone@tempfail.smtp.test        RCPT answered 451 4.3.0 (transient)
    anyone@reject-data.smtp.test     DATA answered 554 5.6.0 (permanent)
    anyone@tempfail-data.smtp.test   DATA answered 451 4.3.0 (transient)

By login domain: a login at `tempfail-auth.smtp.test` (e.g. the username
`rep@tempfail-auth.smtp.test`) is answered "454 4.7.0 Temporary authentication
failure", as Postfix answers when its SASL backend (Dovecot's auth) is down,
whatever the password.

By login: a login listed in `over-quota.txt` beside the log (one a line; the test
writes and clears it: `SmtpServer.set_over_quota`) gets Gmail's answer to a sender
over its daily quota at MAIL, "550 5.4.5 Daily user sending limit exceeded ...";
nothing is delivered, and the refusal is logged.

A refused RCPT is logged with `accepted: false` and only that recipient; a refused
DATA with the whole envelope. If LMTP delivery fails the client gets 451 (and
recipients already delivered may receive the message twice on its retry).

Must never: import project code (it runs in a bare interpreter), or listen
anywhere but the given loopback address.
"""

from __future__ import annotations

import argparse
import asyncio
import email.parser
import email.policy
import json
import logging
import signal
import smtplib
import ssl
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

REJECT_DOMAINS = {
    "reject.smtp.test": ("RCPT", "550 5.1.1 Recipient rejected (injected failure)"),
    "tempfail.smtp.test": ("RCPT", "451 4.3.0 Try again later (injected failure)"),
    "reject-data.smtp.test": ("DATA", "554 5.6.0 Message refused (injected failure)"),
    "tempfail-data.smtp.test": ("DATA", "451 4.3.0 Try again later (injected failure)"),
}
TEMPFAIL_AUTH_DOMAIN = "tempfail-auth.smtp.test"
TEMPFAIL_AUTH = "454 4.7.0 Temporary authentication failure (injected failure)"
ACCEPTED = "250 2.0.0 Message accepted for delivery"
# Gmail's own words (smtp.gmail.com), on one line.
OVER_QUOTA = (
    "550 5.4.5 Daily user sending limit exceeded. For more information on Gmail "
    "sending limits go to https://support.google.com/a/answer/166852 (injected)"
)
OVER_QUOTA_FILE = "over-quota.txt"

log = logging.getLogger("sightline.smtp_server")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(">")


def _message_id(content: bytes) -> str | None:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
    value = headers.get("Message-ID")
    return str(value).strip() if value is not None else None


class DeliveringHandler:
    """aiosmtpd handler: checks the password, injects failures, delivers over LMTP."""

    def __init__(
        self,
        *,
        password: str,
        lmtp: tuple[str, int] | None,
        deliver_command: list[str] | None,
        log_path: Path,
    ) -> None:
        if (lmtp is None) == (deliver_command is None):
            raise ValueError("give exactly one of an LMTP address or a delivery command")
        self.password = password.encode()
        self.lmtp = lmtp
        self.deliver_command = deliver_command
        self.log_path = log_path

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and _domain(data.login.decode()) == TEMPFAIL_AUTH_DOMAIN:
            return AuthResult(success=False, handled=False, message=TEMPFAIL_AUTH)
        ok = isinstance(data, LoginPassword) and data.password == self.password
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    def record(self, session: Session, envelope: Envelope, *, reply: str, **fields: Any) -> None:
        auth = session.auth_data
        login = auth.login if isinstance(auth, LoginPassword) else None
        entry = {
            "time": time.time(),
            "accepted": reply.startswith("250"),
            "reply": reply,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "message_id": None,
            "auth_login": login.decode() if isinstance(login, bytes) else login,
            "size": 0,
            **fields,
        }
        with self.log_path.open("a") as out:
            out.write(json.dumps(entry) + "\n")

    def _login(self, session: Session) -> str | None:
        auth = session.auth_data
        login = auth.login if isinstance(auth, LoginPassword) else None
        return login.decode() if isinstance(login, bytes) else login

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        listed = self.log_path.with_name(OVER_QUOTA_FILE)
        over = listed.read_text().split() if listed.exists() else []
        if self._login(session) in over:
            self.record(session, envelope, reply=OVER_QUOTA, mail_from=address)
            return OVER_QUOTA
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        phase, reply = REJECT_DOMAINS.get(_domain(address), ("", ""))
        if phase == "RCPT":
            self.record(session, envelope, reply=reply, rcpt_tos=[address])
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        fields = {"message_id": _message_id(content), "size": len(content)}
        for rcpt in envelope.rcpt_tos:
            phase, reply = REJECT_DOMAINS.get(_domain(rcpt), ("", ""))
            if phase == "DATA":
                self.record(session, envelope, reply=reply, **fields)
                return reply
        loop = asyncio.get_running_loop()
        try:
            # smtplib blocks: deliver in a thread so other connections keep moving.
            await loop.run_in_executor(None, self._deliver, envelope, content)
        except (OSError, smtplib.SMTPException, subprocess.SubprocessError) as exc:
            log.exception("delivery failed")
            reply = f"451 4.3.0 Delivery to the mailbox failed: {exc}".replace("\n", " ")
            self.record(session, envelope, reply=reply, **fields)
            return reply
        self.record(session, envelope, reply=ACCEPTED, **fields)
        return ACCEPTED

    def _deliver(self, envelope: Envelope, content: bytes) -> None:
        for rcpt in envelope.rcpt_tos:
            if self.deliver_command is not None:
                sender = envelope.mail_from or ""
                command = [
                    part.replace("{rcpt}", rcpt).replace("{from}", sender)
                    for part in self.deliver_command
                ]
                done = subprocess.run(
                    command, check=False, input=content, capture_output=True, timeout=30
                )
                if done.returncode != 0:
                    said = (done.stdout + done.stderr).decode(errors="replace").strip()
                    raise subprocess.SubprocessError(
                        f"{command[0]} exited {done.returncode} for {rcpt}: {said[-300:]}"
                    )
                continue
            assert self.lmtp is not None
            host, port = self.lmtp
            # One LMTP transaction per recipient: smtplib reads only one reply to DATA.
            with smtplib.LMTP(host, port, local_hostname="localhost", timeout=30) as lmtp:
                lmtp.sendmail(envelope.mail_from or "", [rcpt], content)


def _tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    handler = DeliveringHandler(
        password=args.password,
        lmtp=(args.lmtp_host, args.lmtp_port) if args.lmtp_port else None,
        deliver_command=json.loads(args.deliver_command) if args.deliver_command else None,
        log_path=args.log,
    )
    tls = _tls_context(args.tls_cert, args.tls_key)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="smtp.sightline.test",  # never getfqdn(): slow without DNS
            ident="Sightline test SMTP",
            tls_context=tls,
            require_starttls=False,
            auth_required=True,
            auth_require_tls=False,
            authenticator=handler.authenticate,
            enable_SMTPUTF8=True,
            loop=loop,
        )

    server = await loop.create_server(factory, host=args.host, port=args.port)
    port = server.sockets[0].getsockname()[1]
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # Written last, atomically: the parent treats its appearance as "ready".
    ready = Path(args.ready_file)
    ready.with_suffix(".tmp").write_text(str(port))
    ready.with_suffix(".tmp").rename(ready)
    target = handler.deliver_command or "LMTP {}:{}".format(*(handler.lmtp or ("?", 0)))
    log.info("listening on %s:%d, delivering with %s", args.host, port, target)
    await stopping.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--password", required=True, help="the one password every login uses")
    parser.add_argument("--lmtp-host", default="127.0.0.1")
    parser.add_argument("--lmtp-port", type=int, help="deliver through this LMTP port, or:")
    parser.add_argument(
        "--deliver-command", help='JSON list run per recipient, e.g. ["putmail", "{rcpt}"]'
    )
    parser.add_argument("--log", type=Path, required=True, help="JSON-lines envelope log")
    parser.add_argument("--ready-file", required=True, help="written with the port when ready")
    parser.add_argument("--tls-cert", help="PEM certificate chain; enables STARTTLS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # AUTH without TLS is the point here (loopback, test passwords).
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
