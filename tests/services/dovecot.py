"""A private Dovecot IMAP + LMTP server, one per test session.

Owns: the config file, process, ports and maildirs of a Dovecot that lives in one
temporary folder, plus the helpers tests use to put mail in (LMTP) and read it
back (IMAP). Must never: read or change the system's /etc/dovecot, or use ports
outside 127.0.0.1.

Any username logs in with the one shared password (passdb static), and its
mailbox is created on first use (userdb static, home per user), so a test makes
up fresh addresses such as `prospect-<hex>@acme.test` and needs no setup.
Usernames are full email addresses. Every user has INBOX plus Sent, Drafts, Trash
and Junk with their RFC 6154 special-use flags, created and subscribed on first
access. The server advertises IDLE, CONDSTORE, QRESYNC, UIDPLUS, MOVE, SPECIAL-USE.

    temp folder (0755: Dovecot's auth and mail processes run as other users)
    ├── dovecot.conf   dovecot.log   run/ (base_dir)   state/
    └── mail/<user>/Maildir      owned by `vmail` (when run as root)

As root, mail is stored as the system user `vmail` (scripts/test-prereqs.sh
creates it). As another user, every Dovecot process runs as that user.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import smtplib
import subprocess
from pathlib import Path

from tests.services import process
from tests.services.imap_server import (
    SHARED_PASSWORD,
    ImapTestServer,
    SmtpDelivery,
    has_message_id,
    parse,
    unique_address,
)

# The address helpers live in imap_server; tests have always imported them from here.
__all__ = [
    "SHARED_PASSWORD",
    "DovecotServer",
    "dovecot_executable",
    "has_message_id",
    "parse",
    "unique_address",
]
from tests.services.process import ServiceUnavailableError

MAIL_USER = "vmail"
# Special-use folders every user has (RFC 6154), created on first access.
SPECIAL_FOLDERS = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}

_CONFIG = """\
# Written by tests/services/dovecot.py for one test session; see that module.
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
# Plaintext logins on loopback: the tests' clients speak plain IMAP.
disable_plaintext_auth = no
auth_mechanisms = plain login
login_greeting = Sightline test IMAP ready.
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {mail_uid}
first_valid_gid = {mail_gid}
mail_location = maildir:~/Maildir
# Test mail: durability traded for speed.
mail_fsync = never
# IDLE relies on inotify; poll often in case it is unavailable.
mailbox_idle_check_interval = {idle_check}
postmaster_address = postmaster@sightline.test
lmtp_save_to_detail_mailbox = no
{extra}

{passdb}
userdb {{
  driver = static
  # allow_all_users: LMTP may deliver to anyone, as IMAP lets anyone log in.
  args = uid={mail_uid} gid={mail_gid} home={root}/mail/%Lu allow_all_users=yes
}}

namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}
}}

protocol imap {{
  mail_max_userip_connections = 500
}}

service imap-login {{
{login_chroot}
{login_service}
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
# No per-IP login penalty (anvil's, 2 s doubling to 15 s after a failed login): every
# test logs in from 127.0.0.1, and one test's wrong password delayed the logins of the
# tests after it in the same process. A listener no one may open turns it off.
service anvil {{
{anvil}
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

# `many_clients`: thousands of IMAP sessions held at once (bench.scale_imap's 10,000
# IDLE clients). Each imap process serves up to client_limit sessions and lives on
# (service_count 0; with 1 a process takes one session in its life), instead of a
# process per session. A process sets its sessions up one at a time (a first login makes
# the special-use folders): 1,000 logins took 17-23 s at 1,000 sessions a process, 5 s
# at 100 (on a machine busy with other work both times); 200 a process puts 10,000 in 50
# processes, each holding one inotify instance, within the 128 a user may have
# (fs.inotify.max_user_instances; beyond it IDLE falls back to a stat every
# mailbox_idle_check_interval); imap-login in high-performance mode (a few processes
# take every login, no fork per connection); anvil, auth and the other services that
# count clients allowed as many; at the default 256 MB vsz_limit, 1,000 sessions a
# process kept dropping and reconnecting (with 4G they held). Every IDLE also stat()s
# its maildir every mailbox_idle_check_interval besides inotify: the default 30 s, not
# the tests' 1 s (10,000 stats a second). imap-hibernate is not used: a client that
# sends DONE alone (imapclient does: DONE, wait for OK, then IDLE) is moved back to an
# imap process each time, i.e. every PUSH_ALIVE_SECONDS per mailbox; only "DONE\r\n<tag>
# IDLE\r\n" in one packet keeps it hibernated (Dovecot's
# src/imap-hibernate/imap-client.c).
_MANY_CLIENTS = """\
default_client_limit = 16000
service imap {{
  service_count = 0
  client_limit = 200
  process_limit = 100
  vsz_limit = 1G
}}
"""
_MANY_LOGINS = """\
  service_count = 0
  client_limit = 2000
  process_min_avail = 2
  process_limit = 16
"""

_STATIC_PASSDB = """\
passdb {{
  driver = static
  args = password={password}
}}"""
# `passdb_tempfail`: every login meets an authentication backend that is down. A
# checkpassword program that exits 111 reports a temporary failure (Dovecot's
# passdb-checkpassword.c), as an unreachable SQL or LDAP server would.
_TEMPFAIL_PASSDB = """\
passdb {{
  driver = checkpassword
  args = {program}
}}
# Each failure is answered at once (the default waits 2 s); Dovecot's per-IP penalty
# (2 s, 4 s, 8 s, 15 s for repeated failures) still applies: one server per test.
auth_failure_delay = 0
"""
TEMPFAIL_PROGRAM = (
    "#!/bin/sh\n# A checkpassword program whose backend is down (exit 111).\nexit 111\n"
)

_MAILBOX = """\
  mailbox {name} {{
    special_use = {flag}
    auto = subscribe
  }}"""


def dovecot_executable() -> str:
    """Path of the dovecot binary.

    Raises:
        ServiceUnavailableError: Dovecot is not installed.
    """
    found = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
    if not found:
        raise ServiceUnavailableError(
            "Dovecot is not installed: run scripts/test-prereqs.sh as root (`make test` "
            "does), or apt-get install dovecot-imapd dovecot-lmtpd"
        )
    return found


class DovecotServer(ImapTestServer):
    """Dovecot with IMAP and LMTP on free loopback ports; `start()`, then `stop()`.

    `many_clients=True` (benches only; see `_MANY_CLIENTS`) configures it to hold
    thousands of sessions at once; `passdb_tempfail=True` makes every login fail
    temporarily (see `_TEMPFAIL_PASSDB`). The tests' configuration is the default.
    """

    name = "dovecot"

    def __init__(
        self,
        password: str = SHARED_PASSWORD,
        *,
        many_clients: bool = False,
        passdb_tempfail: bool = False,
    ) -> None:
        super().__init__(password)
        self.many_clients = many_clients
        self.passdb_tempfail = passdb_tempfail
        self.lmtp_port = 0
        self.root = Path()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "dovecot.log"

    @property
    def pid(self) -> int | None:
        """The master process's id (every other Dovecot process is its child), or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    def _users(self) -> dict[str, str | int]:
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid())
            group = grp.getgrgid(os.getegid()).gr_name
            return {
                "internal_user": me.pw_name, "internal_group": group,
                "login_user": me.pw_name, "mail_uid": me.pw_uid, "mail_gid": me.pw_gid,
            }  # fmt: skip
        try:
            mail = pwd.getpwnam(MAIL_USER)
        except KeyError:
            raise ServiceUnavailableError(
                f"the system user {MAIL_USER!r} that owns test mail is missing: run "
                "scripts/test-prereqs.sh as root"
            ) from None
        return {
            "internal_user": "dovecot", "internal_group": "dovecot",
            "login_user": "dovenull", "mail_uid": mail.pw_uid, "mail_gid": mail.pw_gid,
        }  # fmt: skip

    def _write_config(self, users: dict[str, str | int]) -> None:
        mailboxes = "\n".join(
            _MAILBOX.format(name=name, flag=flag) for name, flag in SPECIAL_FOLDERS.items()
        )
        # Unprivileged, nothing can chroot: the chrooting services run unchrooted.
        unprivileged = os.geteuid() != 0
        login_chroot = "  chroot =" if unprivileged else ""
        anvil = [login_chroot] if unprivileged else []
        if self.many_clients:
            anvil.append("  client_limit = 16000")
        passdb = _STATIC_PASSDB.format(password=self.password)
        if self.passdb_tempfail:
            program = self.root / "tempfail-passdb"
            program.write_text(TEMPFAIL_PROGRAM)
            program.chmod(0o755)
            passdb = _TEMPFAIL_PASSDB.format(program=program)
        self.config_path.write_text(
            _CONFIG.format(
                instance=f"sightline-test-{self.root.name}",
                root=self.root,
                imap_port=self.imap_port,
                lmtp_port=self.lmtp_port,
                mailboxes=mailboxes,
                passdb=passdb,
                extra=_MANY_CLIENTS.format() if self.many_clients else "",
                anvil="\n".join(anvil),
                login_chroot=login_chroot,
                login_service=_MANY_LOGINS if self.many_clients else "",
                idle_check="30 secs" if self.many_clients else "1 secs",
                **users,
            )
        )

    def start(self, timeout: float = 10.0) -> DovecotServer:
        """Start Dovecot and wait until IMAP greets and LMTP accepts connections.

        Raises:
            ServiceUnavailableError: Dovecot or the `vmail` user is missing.
            ServiceError: Dovecot did not start; the message ends with its log.
        """
        executable = dovecot_executable()
        users = self._users()

        def launch() -> subprocess.Popen[bytes]:
            self.root = process.service_dir("dovecot")
            mail = self.root / "mail"
            mail.mkdir()
            os.chown(mail, int(users["mail_uid"]), int(users["mail_gid"]))
            self.imap_port, self.lmtp_port = process.free_port(), process.free_port()
            self._write_config(users)
            self._proc = process.spawn(
                [executable, "-F", "-c", str(self.config_path)], log_path=self.log_path
            )
            return self._proc

        return self._start_retrying(
            launch, "dovecot", timeout, lambda: process.port_answers(self.host, self.lmtp_port)
        )

    def stop(self) -> None:
        """Stop Dovecot and its children, and remove its folder."""
        if self._proc is not None:
            # Dovecot's orderly shutdown takes 1-6 s (its log and stats processes
            # linger); nothing in a throwaway server is worth that wait.
            process.stop(self._proc, timeout=0.2, group=True)
            self._proc = None
        if self.root != Path():
            process.remove_dir(self.root)

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def deliver(self, rcpt: str, raw: bytes, mail_from: str = "sender@sightline.test") -> None:
        """Deliver a message into `rcpt`'s INBOX through LMTP, as a mail server would.

        Raises:
            smtplib.SMTPException: Dovecot refused the message.
        """
        # local_hostname: smtplib otherwise asks DNS for our FQDN, slowly when offline.
        with smtplib.LMTP(self.host, self.lmtp_port, local_hostname="localhost") as lmtp:
            lmtp.sendmail(mail_from, [rcpt], raw)

    def smtp_delivery(self) -> SmtpDelivery:
        return {"lmtp_host": self.host, "lmtp_port": self.lmtp_port}
