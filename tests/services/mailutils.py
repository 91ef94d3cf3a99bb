"""A private GNU Mailutils imap4d (Debian's mailutils-imap4d 3.15), one per test session.

Owns: the configuration file, process, port and mailboxes of an imap4d that lives
in one temporary folder, and delivering mail into it. Must never: read the
system's /etc/mailutils.conf (it runs with `--config-file`, which implies
`--no-site-config`), or listen outside 127.0.0.1.

What makes it unlike Dovecot: mailboxes are mbox files (UIDs kept in X-UID
headers, UIDVALIDITY in X-IMAPbase, both rewritten when a session expunges or the
file is rewritten); the personal namespace is "" with "/" and there is no Sent
folder until a client creates one; it echoes header field names unquoted and
writes the header lines back in the case they were asked for (``FROM: …``);
and its IDLE sends nothing while idling: new mail is reported only when the
client ends IDLE. Settings are imap4d's defaults except what a private instance
needs: the listening address, foreground, no syslog, no TCP wrappers, and where
users are looked up.

Users: any address logs in with the shared password once `ensure_user` added it
(every delivery does) to a virtual-domain password file (``virtdomain``: one
passwd-format file per domain, user ``local``, home ``mail/<domain>/<local>``)
and `generic` checks the password. imap4d serves virtual users as root (it
does not switch to their uid), so their mbox files are root's. Mail is
delivered with Mailutils' own
`putmail` into the user's INBOX, as the mail user, under imap4d's own locking
(`python -m tests.services.mailutils deliver ROOT RCPT FROM` is what the SMTP
server runs).

    temp folder (0755)
    ├── imap4d.conf  imap4d.log
    ├── passwd/<domain>                    virtual users, passwd format
    └── mail/<domain>/<local>/INBOX        mbox files (root's, as imap4d makes them)
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.services import process
from tests.services.imap_server import SHARED_PASSWORD, ImapTestServer, SmtpDelivery
from tests.services.process import ServiceError, ServiceUnavailableError

MAIL_USER = "vmail"

_CONFIG = """\
# Written by tests/services/mailutils.py for one test session; see that module.
logging {{ syslog no; }};
mode daemon;
foreground yes;
pidfile "{root}/imap4d.pid";
tcp-wrappers {{ enable no; }};
auth {{ authorization virtdomain; authentication generic; }};
virtdomain {{ passwd-dir "{root}/passwd"; }};
server {host}:{port} {{ }};
"""


def _hash_password(password: str) -> str:
    done = subprocess.run(
        ["openssl", "passwd", "-5", "-stdin"],
        input=password.encode(),
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def home_of(root: Path, address: str) -> Path:
    local, _, domain = address.lower().rpartition("@")
    return root / "mail" / domain / local


def ensure_user(root: Path, address: str, password_hash: str) -> Path:
    """Add `address` to its domain's password file and make its home. Returns the INBOX path.

    Safe across processes (the SMTP server's deliveries run alongside the tests).
    """
    local, _, domain = address.lower().rpartition("@")
    home = home_of(root, address)
    with (root / "users.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        passwd = root / "passwd" / domain
        lines = passwd.read_text().splitlines() if passwd.exists() else []
        if any(line.split(":", 1)[0] == local for line in lines):
            return home / "INBOX"
        mail = pwd.getpwnam(MAIL_USER)
        home.mkdir(parents=True, exist_ok=True)
        with passwd.open("a") as out:
            out.write(f"{local}:{password_hash}:{mail.pw_uid}:{mail.pw_gid}::{home}:/bin/false\n")
    return home / "INBOX"


def deliver_into(root: Path, rcpt: str, raw: bytes, mail_from: str) -> None:
    """Deliver with Mailutils' putmail into the recipient's INBOX.

    As root, like imap4d itself: Mailutils does not switch to a virtual-domain
    user's uid (its auth data says change_uid=0), so their mailboxes are root's.
    """
    inbox = ensure_user(root, rcpt, (root / "password.hash").read_text().strip())
    done = subprocess.run(
        ["putmail", f"--from={mail_from or 'MAILER-DAEMON'}", f"mbox://{inbox}"],
        check=False,
        # An MTA hands local delivery agents LF line ends, not SMTP's CRLF.
        input=raw.replace(b"\r\n", b"\n"),
        capture_output=True,
        # putmail reads ~/.putmail: the recipient's home, not the caller's.
        env={"HOME": str(inbox.parent), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode(errors="replace").strip()
        raise ServiceError(f"putmail refused mail for {rcpt} ({done.returncode}): {said}")


class MailutilsServer(ImapTestServer):
    """GNU Mailutils imap4d on a free loopback port; `start()`, then `stop()`."""

    name = "mailutils"
    sent_folder = "Sent"

    def __init__(self, password: str = SHARED_PASSWORD) -> None:
        super().__init__(password)
        self.root = Path()
        self._proc: subprocess.Popen[bytes] | None = None
        self._password_hash = ""

    @property
    def log_path(self) -> Path:
        return self.root / "imap4d.log"

    @property
    def config_path(self) -> Path:
        return self.root / "imap4d.conf"

    def inbox_path(self, address: str) -> Path:
        return home_of(self.root, address) / "INBOX"

    def _executable(self) -> str:
        found = shutil.which("imap4d", path="/usr/sbin:/usr/bin")
        if not found or not shutil.which("putmail"):
            raise ServiceUnavailableError(
                "GNU Mailutils imap4d or putmail is missing: run scripts/test-prereqs.sh as "
                "root (`make test` does), or apt-get install mailutils-imap4d mailutils-mda"
            )
        if os.geteuid() != 0:
            raise ServiceUnavailableError(
                "GNU Mailutils imap4d needs root here (logins switch to the mail user)"
            )
        try:
            pwd.getpwnam(MAIL_USER)
        except KeyError:
            raise ServiceUnavailableError(
                f"the system user {MAIL_USER!r} is missing: run scripts/test-prereqs.sh as root"
            ) from None
        return found

    def start(self, timeout: float = 15.0) -> MailutilsServer:
        """Start imap4d and wait until it greets.

        Raises:
            ServiceUnavailableError: not root, or Mailutils is missing.
            ServiceError: imap4d did not start; the message ends with its log.
        """
        executable = self._executable()

        def launch() -> subprocess.Popen[bytes]:
            self.root = process.service_dir("mailutils")
            (self.root / "passwd").mkdir()
            (self.root / "mail").mkdir()
            self.imap_port = process.free_port()
            self.config_path.write_text(
                _CONFIG.format(root=self.root, host=self.host, port=self.imap_port)
            )
            self._password_hash = _hash_password(self.password)
            (self.root / "password.hash").write_text(self._password_hash + "\n")
            self._proc = process.spawn(
                [executable, f"--config-file={self.config_path}"], log_path=self.log_path
            )
            return self._proc

        return self._start_retrying(launch, "mailutils imap4d", timeout)

    def stop(self) -> None:
        """Stop imap4d and its per-connection children, and remove the folder."""
        self._stop_group(self._proc, self.root)
        self._proc = None

    def ensure_user(self, address: str) -> None:
        ensure_user(self.root, address, self._password_hash)

    def renumber(self, address: str) -> None:
        """Rewrite the INBOX mbox without its UID headers, as another mbox tool would.

        Mailutils keeps UIDVALIDITY in X-IMAPbase and each UID in X-UID; without
        them it numbers the messages afresh under a new UIDVALIDITY, which is the
        clock's second: a second is let pass first.
        """
        inbox = self.inbox_path(address)
        time.sleep(max(0.0, inbox.stat().st_mtime + 1.05 - time.time()))
        kept, in_header = [], False
        for line in inbox.read_bytes().splitlines(keepends=True):
            if line.startswith(b"From "):
                in_header = True  # an mbox separator: a message's header follows
            elif not line.strip():
                in_header = False
            if not (in_header and line.startswith((b"X-IMAPbase:", b"X-UID:"))):
                kept.append(line)
        fresh = inbox.with_name("INBOX.rewrite")
        fresh.write_bytes(b"".join(kept))
        os.chmod(fresh, 0o600)
        fresh.replace(inbox)

    def deliver(self, rcpt: str, raw: bytes, mail_from: str = "sender@sightline.test") -> None:
        deliver_into(self.root, rcpt, raw, mail_from)

    def smtp_delivery(self) -> SmtpDelivery:
        command = [sys.executable, "-m", "tests.services.mailutils", "deliver", str(self.root)]
        return {"deliver_command": [*command, "{rcpt}", "{from}"]}


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.services.mailutils deliver ROOT RCPT FROM < message` (the SMTP server's)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("action", choices=["deliver"])
    parser.add_argument("root", type=Path)
    parser.add_argument("rcpt")
    parser.add_argument("mail_from")
    args = parser.parse_args(argv)
    deliver_into(args.root, args.rcpt, sys.stdin.buffer.read(), args.mail_from)


if __name__ == "__main__":
    main()
