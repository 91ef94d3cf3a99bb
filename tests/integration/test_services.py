"""The real servers behave as the rest of the suite relies on.

Each test fails if its server misbehaves: mail that does not arrive, or arrives
with another Message-ID; IDLE that never wakes; a missing \\Sent folder; a database
that is not empty or not ours; data lost across a Redis restart with AOF on; a
server left running after its owner is killed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy as sa
from imapclient.imapclient import DRAFTS, JUNK, SENT, TRASH

from tests.services import dovecot as dovecot_module
from tests.services import postgres
from tests.services.dovecot import DovecotServer, has_message_id
from tests.services.process import ServiceError
from tests.services.redis import (
    CLAIMABLE_DATABASES,
    PrivateRedisServer,
    claim_database,
    lock_path,
)
from tests.services.smtp import REPO_ROOT, SmtpServer


def outgoing(sender: str, rcpt: str, subject: str = "Quick question") -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = rcpt
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="sightline.test")
    message.set_content("Hi,\n\nDo you have ten minutes on Thursday?\n")
    return message


def pids_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


# --- SMTP into Dovecot -------------------------------------------------------------


def test_sendmail_with_auth_lands_in_recipient_inbox_with_the_same_message_id(
    smtp_server: SmtpServer, dovecot: DovecotServer, unique_address: Callable[..., str]
) -> None:
    sender, prospect = unique_address("sightline.test", "rep"), unique_address("acme.test")
    message = outgoing(sender, prospect)
    message_id = message["Message-ID"]

    with smtp_server.connect(sender) as client:
        client.sendmail(sender, [prospect], message.as_bytes())

    received = dovecot.wait_for_message(prospect, has_message_id(message_id), timeout=5)
    assert received["Subject"] == "Quick question"
    assert [m.count(message_id.encode()) for m in dovecot.messages(prospect)] == [1]
    [logged] = smtp_server.sent_to(prospect)
    assert (logged.mail_from, logged.rcpt_tos) == (sender, (prospect,))
    assert (logged.message_id, logged.auth_login) == (message_id, sender)


def test_smtp_refuses_mail_without_auth_or_with_a_wrong_password(
    smtp_server: SmtpServer, unique_address: Callable[..., str]
) -> None:
    sender, prospect = unique_address("sightline.test", "rep"), unique_address("acme.test")
    with smtp_server.connect() as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(sender, [prospect], outgoing(sender, prospect).as_bytes())
        assert refused.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(sender, "not-the-password")
    assert smtp_server.sent_to(prospect) == []


def test_starttls_with_the_throwaway_ca_then_auth_delivers(
    smtp_server: SmtpServer, dovecot: DovecotServer, unique_address: Callable[..., str]
) -> None:
    sender, prospect = unique_address("sightline.test", "rep"), unique_address("acme.test")
    message = outgoing(sender, prospect)
    with smtp_server.connect(sender, starttls=True) as client:
        assert isinstance(client.sock, ssl.SSLSocket)  # TLS on
        client.sendmail(sender, [prospect], message.as_bytes())
    dovecot.wait_for_message(prospect, has_message_id(message["Message-ID"]), timeout=5)


def test_injected_failures_refuse_and_deliver_nothing(
    smtp_server: SmtpServer, dovecot: DovecotServer, unique_address: Callable[..., str]
) -> None:
    sender, prospect = unique_address("sightline.test", "rep"), unique_address("acme.test")
    bounced = unique_address("reject.smtp.test")
    deferred = unique_address("tempfail-data.smtp.test")
    with smtp_server.connect(sender) as client:
        refused = client.sendmail(sender, [prospect, bounced], b"Subject: a\r\n\r\nx\r\n")
        assert refused == {bounced: (550, b"5.1.1 Recipient rejected (injected failure)")}
        with pytest.raises(smtplib.SMTPDataError) as data_error:
            client.sendmail(sender, [prospect, deferred], b"Subject: b\r\n\r\ny\r\n")
        assert data_error.value.smtp_code == 451

    subjects = [dovecot_module.parse(raw)["Subject"] for raw in dovecot.messages(prospect)]
    assert subjects == ["a"]  # the deferred message reached nobody
    assert [e.rcpt_tos for e in smtp_server.sent_to(prospect)] == [(prospect,)]
    refusals = [e for e in smtp_server.log() if not e.accepted and e.mail_from == sender]
    assert [(e.reply[:3], e.rcpt_tos) for e in refusals] == [
        ("550", (bounced,)),
        ("451", (prospect, deferred)),
    ]


# --- Dovecot -----------------------------------------------------------------------


def test_idle_on_inbox_wakes_up_on_an_lmtp_delivery(
    dovecot: DovecotServer, unique_address: Callable[..., str]
) -> None:
    prospect = unique_address("acme.test")
    with dovecot.imap(prospect) as client:
        client.select_folder("INBOX")
        client.idle()
        try:
            assert client.idle_check(timeout=0.2) == []  # nothing yet
            dovecot.deliver(prospect, outgoing("a@sightline.test", prospect).as_bytes())
            started = time.monotonic()
            responses = client.idle_check(timeout=5)
            woke_after = time.monotonic() - started
        finally:
            client.idle_done()
    assert (1, b"EXISTS") in responses
    assert woke_after < 2, f"IDLE took {woke_after:.1f} s to report the delivery"


def test_every_new_user_has_special_use_folders_and_the_extensions_we_use(
    dovecot: DovecotServer, unique_address: Callable[..., str]
) -> None:
    rep = unique_address("sightline.test", "rep")
    with dovecot.imap(rep) as client:
        for capability in (b"IDLE", b"CONDSTORE", b"QRESYNC", b"UIDPLUS", b"SPECIAL-USE", b"MOVE"):
            assert client.has_capability(capability.decode()), capability
        specials = {flag: client.find_special_folder(flag) for flag in (SENT, DRAFTS, TRASH, JUNK)}
        assert specials == {SENT: "Sent", DRAFTS: "Drafts", TRASH: "Trash", JUNK: "Junk"}
        assert "Sent" in [name for _, _, name in client.list_sub_folders()]
        sent = outgoing(rep, unique_address("acme.test"))
        client.append("Sent", sent.as_bytes(), flags=[b"\\Seen"])
    [stored] = dovecot.messages(rep, "Sent")
    assert dovecot_module.parse(stored)["Message-ID"] == sent["Message-ID"]


def test_mail_is_stored_under_the_unprivileged_mail_user(
    dovecot: DovecotServer, unique_address: Callable[..., str]
) -> None:
    prospect = unique_address("acme.test")
    dovecot.deliver(prospect, outgoing("a@sightline.test", prospect).as_bytes())
    [maildir] = (dovecot.root / "mail").glob(f"{prospect}/Maildir")
    expected = os.geteuid() if os.geteuid() != 0 else pwd.getpwnam("vmail").pw_uid
    assert maildir.stat().st_uid == expected


def test_a_dovecot_that_cannot_start_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    dovecot_module.dovecot_executable()  # skip nothing: Dovecot must be installed here
    monkeypatch.setattr(dovecot_module, "_CONFIG", dovecot_module._CONFIG + "no_such_setting = 1\n")
    with pytest.raises(ServiceError, match="no_such_setting"):
        DovecotServer().start(timeout=5)


def test_servers_die_with_the_process_that_started_them() -> None:
    """A SIGKILLed pytest must leave no Dovecot or SMTP server behind."""
    script = (
        "from tests.services.dovecot import DovecotServer\n"
        "from tests.services.smtp import SmtpServer\n"
        "d = DovecotServer().start()\n"
        "s = SmtpServer(lmtp_host=d.host, lmtp_port=d.lmtp_port, password=d.password).start()\n"
        "print(d.config_path, s.envelope_log_path, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        dovecot_config, smtp_log = owner.stdout.readline().split()
        assert pids_mentioning(dovecot_config) and pids_mentioning(smtp_log)
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    try:
        deadline = time.monotonic() + 10
        while (pids_mentioning(dovecot_config) or pids_mentioning(smtp_log)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert pids_mentioning(dovecot_config) == []
        assert pids_mentioning(smtp_log) == []
    finally:  # the killed owner could not remove its folders
        shutil.rmtree(Path(dovecot_config).parent, ignore_errors=True)
        shutil.rmtree(Path(smtp_log).parent, ignore_errors=True)


# --- PostgreSQL --------------------------------------------------------------------


def test_postgres_url_is_a_database_of_our_own_usable_through_sqlalchemy(
    postgres_url: str,
) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as connection:
            name = connection.execute(sa.text("SELECT current_database()")).scalar_one()
            connection.execute(sa.text("CREATE TEMPORARY TABLE probe (n int)"))
            connection.execute(sa.text("INSERT INTO probe VALUES (1), (2)"))
            total = connection.execute(sa.text("SELECT sum(n) FROM probe")).scalar_one()
    finally:
        engine.dispose()
    assert name.startswith(postgres.DATABASE_PREFIX)
    assert total == 3


def test_a_temporary_database_starts_empty_and_is_gone_after_drop(postgres_url: str) -> None:
    server = postgres.find_server()
    database = postgres.TemporaryDatabase(server).create()
    engine = sa.create_engine(database.url)
    try:
        with engine.begin() as connection:
            tables = connection.execute(
                sa.text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ).scalar_one()
            connection.execute(sa.text("CREATE TABLE left_behind (n int)"))
        libpq_url = sa.make_url(database.url).set(drivername="postgresql")
        with psycopg.connect(libpq_url.render_as_string(hide_password=False)) as lingering:
            database.drop()  # an open connection must not block the drop...
            with pytest.raises(psycopg.OperationalError):
                lingering.execute("SELECT 1")  # ...it is terminated
    finally:
        engine.dispose()
    assert tables == 0
    admin = sa.create_engine(server)
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"),
                {"name": database.name},
            ).scalar_one()
    finally:
        admin.dispose()
    assert exists == 0


# --- Redis -------------------------------------------------------------------------


def test_redis_url_is_a_claimed_database_not_the_default_one(
    redis_url: str, redis_client: redis.Redis
) -> None:
    db = redis_client.connection_pool.connection_kwargs["db"]
    assert db in CLAIMABLE_DATABASES or "SIGHTLINE_TEST_REDIS_URL" in os.environ
    assert redis_client.dbsize() == 0  # emptied before the test
    redis_client.set("probe", "1")
    assert redis.Redis.from_url(redis_url).get("probe") == b"1"


def test_claimed_databases_are_emptied_exclusive_and_leave_others_alone(
    private_redis: PrivateRedisServer,
) -> None:
    server = private_redis.url().split("?")[0]
    seed = {
        db: redis.Redis(unix_socket_path=str(private_redis.socket_path), db=db) for db in (0, 9, 10)
    }
    for db, client in seed.items():
        client.set("left-over", db)

    first = claim_database(server)
    second = claim_database(server)  # `first` is held: a different one
    try:
        assert (first.url, second.url) == (f"{server}?db=9", f"{server}?db=10")
        assert seed[9].dbsize() == 0 and seed[10].dbsize() == 0
        seed[9].set("mine", 1)
    finally:
        first.release()
        second.release()
    assert seed[9].dbsize() == 0  # emptied on release
    assert seed[0].get("left-over") == b"0"  # never touched
    again = claim_database(server)
    again.release()
    assert again.url == f"{server}?db=9"  # free again
    for db in CLAIMABLE_DATABASES:  # this server dies with the test: so may its locks
        lock_path(server, db).unlink(missing_ok=True)


def test_private_redis_with_aof_keeps_data_across_a_crash_and_a_restart(
    private_redis: PrivateRedisServer,
) -> None:
    client = redis.Redis.from_url(private_redis.url())
    client.set("job:1", "queued")
    private_redis.restart(crash=True)
    assert client.get("job:1") == b"queued"  # the client reconnects by itself
    private_redis.restart()
    assert client.get("job:1") == b"queued"


def test_private_redis_without_aof_loses_data_on_restart(tmp_path: Path) -> None:
    with PrivateRedisServer(appendonly=False) as server:
        client = redis.Redis.from_url(server.url())
        client.set("job:1", "queued")
        server.restart()
        assert client.get("job:1") is None
