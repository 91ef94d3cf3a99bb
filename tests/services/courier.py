"""A private Courier-IMAP server (Debian's courier-imap 5.0), one per test session.

Owns: the configuration, processes, port and maildirs of a Courier-IMAP that lives
in one temporary folder, and delivering mail into it. Must never: change the
system's /etc/courier or /run/courier, or listen outside 127.0.0.1.

Courier is the server the product owners' outside check failed on: its personal
namespace is ``INBOX.`` (separator "."), so a top-level ``Sent`` is refused; it
quotes header field names in FETCH answers (``BODY[HEADER.FIELDS ("MESSAGE-ID"
…)]``); and with Debian's default ``IMAP_ENHANCEDIDLE=0`` its IDLE looks at the
folder only every ``IMAP_IDLE_TIMEOUT`` (60) seconds. It runs here with Debian's
own default settings file (`/etc/courier/imapd` from the package) and only the
address, port and pid file changed; STARTTLS is not offered (no certificate).

Where Courier insists on system paths, and how they are kept private:

- Debian declares courier-imap in conflict with every other IMAP server
  (``Conflicts: imap-server``), so it cannot be installed next to Dovecot.
  scripts/test-prereqs.sh installs what can be (courier-base, courier-authdaemon,
  courier-authlib-userdb: couriertcpd, authdaemond, makeuserdb, deliverquota) and
  unpacks the courier-imap package itself (`imapd`, `imaplogin` and its default
  settings) under its state folder (`COURIER_IMAP_ROOT`).
- Logins go through authdaemond, whose socket path
  (/run/courier/authdaemon/socket) and settings file (/etc/courier/authdaemonrc)
  are compiled in. The server runs in its own mount namespace (`unshare --mount`)
  where this session's folders are bind-mounted over /etc/courier and
  /run/courier/authdaemon: the machine's own files are never touched, and two
  sessions never see each other's. Hence root only.

Users are in a userdb (authuserdb) with the shared password, added on first use
(`ensure_user`, also called for every delivery), maildirs owned by `vmail`.
Mail is delivered the way Courier's own MTA does locally: `deliverquota` into
the recipient's Maildir (`python -m tests.services.courier deliver ROOT RCPT`
is the command the SMTP server runs).

    temp folder (0755)
    ├── etc/   imapd imapd-ssl authdaemonrc userdb userdb.dat   (→ /etc/courier)
    ├── run/   authdaemond's socket                             (→ /run/courier/authdaemon)
    ├── mail/<address>/Maildir                                  owned by vmail
    └── start.sh  courier.log
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
COURIER_IMAP_ROOT = process.prereqs_state_dir() / "courier-imap"
AUTHDAEMOND = "/usr/lib/courier/courier-authlib/authdaemond"
REPO_ROOT = Path(__file__).resolve().parents[2]

_AUTHDAEMONRC = """\
# Written by tests/services/courier.py: Debian's authdaemonrc with only userdb logins.
authmodulelist="authuserdb"
authmodulelistorig="authuserdb"
daemons=2
authdaemonvar=/run/courier/authdaemon
DEBUG_LOGIN=0
DEFAULTOPTIONS=""
LOGGEROPTS=""
"""

# What Debian's /usr/lib/courier/imapd does on `start`, minus courierlogger (the
# log goes to our file) and the access file, inside the private mount namespace.
_START = """\
set -e
mount --bind {root}/etc /etc/courier
mount --bind {root}/run /run/courier/authdaemon
setpriv --pdeathsig TERM {authdaemond} &
set -a
. /etc/courier/imapd-ssl
. /etc/courier/imapd
set +a
umask $IMAP_UMASK
ulimit -v $IMAP_ULIMITD
IMAP_STARTTLS=NO
export IMAP_STARTTLS
exec /usr/sbin/couriertcpd -address=$ADDRESS -maxprocs=$MAXDAEMONS -maxperip=$MAXPERIP \\
    $TCPDOPTS $PORT {imap_root}/usr/lib/courier/courier/imaplogin \\
    {imap_root}/usr/bin/imapd $MAILDIRPATH
"""


def _need(path: str | Path, what: str) -> str:
    if not Path(path).exists():
        raise ServiceUnavailableError(
            f"{what} is missing ({path}): run scripts/test-prereqs.sh as root (`make test` does)"
        )
    return str(path)


def _hash_password(password: str) -> str:
    done = subprocess.run(
        ["openssl", "passwd", "-5", "-stdin"],
        input=password.encode(),
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def ensure_user(root: Path, address: str, password_hash: str) -> Path:
    """Add `address` to the userdb and make its Maildir, unless done. Returns the Maildir.

    Safe across processes (the SMTP server's deliveries run alongside the tests).
    """
    address = address.lower()
    home = root / "mail" / address
    maildir = home / "Maildir"
    with (root / "users.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        userdb = root / "etc" / "userdb"
        known = {line.split("\t", 1)[0] for line in userdb.read_text().splitlines()}
        if address in known:
            return maildir
        mail = pwd.getpwnam(MAIL_USER)
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, mail.pw_uid, mail.pw_gid)
        subprocess.run(
            ["maildirmake.courier", str(maildir)], check=True, user=mail.pw_uid, group=mail.pw_gid
        )
        fields = f"uid={mail.pw_uid}|gid={mail.pw_gid}|home={home}|mail={maildir}"
        with userdb.open("a") as out:
            out.write(f"{address}\t{fields}|systempw={password_hash}\n")
        subprocess.run(["makeuserdb", "-f", str(userdb)], check=True, capture_output=True)
    return maildir


def deliver_into(root: Path, rcpt: str, raw: bytes) -> None:
    """Deliver like Courier's local delivery: deliverquota into the recipient's Maildir."""
    maildir = ensure_user(root, rcpt, (root / "password.hash").read_text().strip())
    mail = pwd.getpwnam(MAIL_USER)
    done = subprocess.run(
        ["deliverquota.courier", str(maildir)],
        check=False,
        # An MTA hands local delivery agents LF line ends, not SMTP's CRLF.
        input=raw.replace(b"\r\n", b"\n"),
        capture_output=True,
        user=mail.pw_uid,
        group=mail.pw_gid,
    )
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode(errors="replace").strip()
        raise ServiceError(f"deliverquota refused mail for {rcpt} ({done.returncode}): {said}")


class CourierServer(ImapTestServer):
    """Courier-IMAP on a free loopback port; `start()`, then `stop()`."""

    name = "courier"
    sent_folder = "INBOX.Sent"

    def __init__(
        self, password: str = SHARED_PASSWORD, *, settings: dict[str, str] | None = None
    ) -> None:
        """`settings`: lines of Debian's /etc/courier/imapd to change (e.g. IMAP_IDLE_TIMEOUT)."""
        super().__init__(password)
        self.settings = dict(settings or {})
        self.root = Path()
        self._proc: subprocess.Popen[bytes] | None = None
        self._password_hash = ""

    @property
    def log_path(self) -> Path:
        return self.root / "courier.log"

    def maildir(self, address: str) -> Path:
        return self.root / "mail" / address.lower() / "Maildir"

    def _check_machine(self) -> None:
        if os.geteuid() != 0:
            raise ServiceUnavailableError(
                "Courier-IMAP needs root here (a private mount namespace, and logins that "
                "switch to the mail user): run the tests as root"
            )
        _need(COURIER_IMAP_ROOT / "usr/bin/imapd", "the unpacked courier-imap package")
        _need(AUTHDAEMOND, "courier-authdaemon")
        _need("/usr/sbin/couriertcpd", "courier-base")
        _need("/usr/sbin/makeuserdb", "courier-authlib-userdb")
        _need("/etc/courier", "courier-base's /etc/courier (a mount point)")
        try:
            pwd.getpwnam(MAIL_USER)
        except KeyError:
            raise ServiceUnavailableError(
                f"the system user {MAIL_USER!r} is missing: run scripts/test-prereqs.sh as root"
            ) from None
        if not (shutil.which("unshare") and shutil.which("setpriv")):
            raise ServiceUnavailableError("util-linux's unshare and setpriv are missing")

    def _write_config(self, port: int) -> None:
        etc = self.root / "etc"
        etc.mkdir()
        (self.root / "run").mkdir()
        (self.root / "mail").mkdir()
        (etc / "authdaemonrc").write_text(_AUTHDAEMONRC)
        shutil.copy(COURIER_IMAP_ROOT / "etc/courier/imapd-ssl", etc / "imapd-ssl")
        changes = {
            "ADDRESS": self.host,
            "PORT": str(port),
            "PIDFILE": str(self.root / "run" / "imapd.pid"),
            **self.settings,
        }
        lines = []
        for line in (COURIER_IMAP_ROOT / "etc/courier/imapd").read_text().splitlines():
            key = line.partition("=")[0]
            changed = key in changes and not line.startswith("#")
            lines.append(f"{key}={changes.pop(key)}" if changed else line)
        lines += [f"{key}={value}" for key, value in changes.items()]
        (etc / "imapd").write_text("\n".join(lines) + "\n")
        userdb = etc / "userdb"
        userdb.touch(mode=0o600)
        userdb.chmod(0o600)  # makeuserdb refuses a userdb others may read
        self._password_hash = _hash_password(self.password)
        (self.root / "password.hash").write_text(self._password_hash + "\n")
        (self.root / "start.sh").write_text(
            _START.format(root=self.root, authdaemond=AUTHDAEMOND, imap_root=COURIER_IMAP_ROOT)
        )

    def start(self, timeout: float = 15.0) -> CourierServer:
        """Start Courier and wait until it greets.

        Raises:
            ServiceUnavailableError: not root, or the Courier packages are missing.
            ServiceError: Courier did not start; the message ends with its log.
        """
        self._check_machine()
        os.makedirs("/run/courier/authdaemon", exist_ok=True)  # a mount point only

        def launch() -> subprocess.Popen[bytes]:
            self.root = process.service_dir("courier")
            self.imap_port = process.free_port()
            self._write_config(self.imap_port)
            self._proc = process.spawn(
                [
                    *("unshare", "--mount", "--propagation", "private"),
                    "sh",
                    str(self.root / "start.sh"),
                ],
                log_path=self.log_path,
            )
            return self._proc

        return self._start_retrying(launch, "courier-imap", timeout)

    def stop(self) -> None:
        """Stop couriertcpd, authdaemond and every login, and remove the folder."""
        self._stop_group(self._proc, self.root)
        self._proc = None

    def ensure_user(self, address: str) -> None:
        ensure_user(self.root, address, self._password_hash)

    def renumber(self, address: str) -> None:
        """Make Courier rebuild the INBOX's UID list (new UIDVALIDITY) on its next SELECT.

        What happens when courierimapuiddb is lost or corrupted: Courier numbers the
        messages afresh, even while other sessions have the folder open. Its new
        UIDVALIDITY is the clock's second, so a second is let pass first.
        """
        uiddb = self.maildir(address) / "courierimapuiddb"
        numbered = uiddb.stat().st_mtime
        uiddb.unlink()
        time.sleep(max(0.0, numbered + 1.05 - time.time()))

    def deliver(self, rcpt: str, raw: bytes, mail_from: str = "sender@sightline.test") -> None:
        deliver_into(self.root, rcpt, raw)

    def smtp_delivery(self) -> SmtpDelivery:
        command = [sys.executable, "-m", "tests.services.courier", "deliver", str(self.root)]
        return {"deliver_command": [*command, "{rcpt}"]}


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.services.courier deliver ROOT RCPT < message` (the SMTP server's)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("action", choices=["deliver"])
    parser.add_argument("root", type=Path)
    parser.add_argument("rcpt")
    args = parser.parse_args(argv)
    deliver_into(args.root, args.rcpt, sys.stdin.buffer.read())


if __name__ == "__main__":
    main()
