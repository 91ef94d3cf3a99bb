"""pytest plugin: the real servers as fixtures.

Listed in tests/conftest.py: `pytest_plugins = ["tests.services.fixtures"]`.

Session fixtures, started on first use and stopped when the session ends:

    redis_url      str            an isolated logical database (see tests.services.redis),
                                  emptied at session start and end
    postgres_url   str            a fresh database, `postgresql+psycopg://...`, dropped at end
    dovecot        DovecotServer  IMAP + LMTP; any address logs in with `mail_password`
    smtp_server    SmtpServer     SMTP AUTH, delivers into `dovecot`; `.sent_log()`
    courier        CourierServer  Courier-IMAP with Debian's defaults (INBOX. namespace,
                                  IDLE that polls every 60 s); users made on first use
    courier_smtp   SmtpServer     the SMTP server delivering into `courier`
    mailutils      MailutilsServer  GNU Mailutils imap4d (mbox, IDLE that reports nothing)
    mailutils_smtp SmtpServer     the SMTP server delivering into `mailutils`

Function fixtures:

    dovecot_tempfail DovecotServer  a Dovecot whose authentication backend is down:
                                    every login answered NO [UNAVAILABLE] (its own, so
                                    Dovecot's per-IP penalty for failed logins, 2-15 s,
                                    never carries over to another test)
    redis_client   redis.Redis          on `redis_url`, emptied before the test
    private_redis  PrivateRedisServer   the test's own server (AOF on, fsync always):
                                        `.restart()`, `.restart(crash=True)`, `.url()`
    mail_password  str                  the password every mail login uses
    unique_address Callable[..., str]   `unique_address("acme.test")` -> fresh address

Tests that use any of these are marked `integration` (`pytest -m "not integration"`
runs the rest).

When a server cannot exist on this machine (not installed, not root) its tests
are skipped with a message saying what to install — except in CI (`CI` set), where
a missing server fails them: CI must never pass by skipping. A server that exists
but misbehaves is always an error, with its log's tail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import NoReturn, TypeVar

import pytest
import redis

from tests.services import postgres
from tests.services import redis as test_redis
from tests.services.courier import CourierServer
from tests.services.dovecot import DovecotServer
from tests.services.dovecot import unique_address as make_address
from tests.services.imap_server import ImapTestServer
from tests.services.mailutils import MailutilsServer
from tests.services.process import ServiceUnavailableError, in_ci
from tests.services.smtp import SmtpServer

SERVICE_FIXTURES = frozenset(
    {
        "redis_url",
        "postgres_url",
        "dovecot",
        "dovecot_tempfail",
        "smtp_server",
        "redis_client",
        "private_redis",
        "courier",
        "courier_smtp",
        "mailutils",
        "mailutils_smtp",
    }
)
_start_times: dict[str, float] = {}


def _unavailable(exc: ServiceUnavailableError) -> NoReturn:
    if in_ci():
        pytest.fail(f"{exc}\n(CI is set: a missing service fails, never skips)", pytrace=False)
    pytest.skip(str(exc))


class _Timer:
    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> None:
        self.started = time.monotonic()

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is None:
            _start_times[self.name] = time.monotonic() - self.started


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _start_times and terminalreporter.config.get_verbosity() > 0:
        timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in _start_times.items())
        terminalreporter.write_line(f"test services started: {timings}")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    private = None
    try:
        with _Timer("redis"):
            server_url = test_redis.find_server()
            if server_url is None:
                private = test_redis.PrivateRedisServer().start()
                # Ours alone: no other session can see it, so nothing to lock.
                claimed = test_redis.ClaimedDatabase(private.url(db=9), lock_fd=None)
            else:
                claimed = test_redis.claim_database(server_url)
    except ServiceUnavailableError as exc:
        _unavailable(exc)
    try:
        yield claimed.url
    finally:
        claimed.release()
        if private is not None:
            private.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def private_redis() -> Iterator[test_redis.PrivateRedisServer]:
    try:
        server = test_redis.PrivateRedisServer(appendonly=True, appendfsync="always").start()
    except ServiceUnavailableError as exc:
        _unavailable(exc)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        with _Timer("postgres"):
            database = postgres.TemporaryDatabase(postgres.find_server()).create()
    except ServiceUnavailableError as exc:
        _unavailable(exc)
    try:
        yield database.url
    finally:
        database.drop()


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    server = DovecotServer()
    try:
        with _Timer("dovecot"):
            server.start()
    except ServiceUnavailableError as exc:
        _unavailable(exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dovecot_tempfail() -> Iterator[DovecotServer]:
    server = DovecotServer(passdb_tempfail=True)
    try:
        server.start()
    except ServiceUnavailableError as exc:
        _unavailable(exc)
    try:
        yield server
    finally:
        server.stop()


def _serve_smtp(name: str, into: ImapTestServer) -> Iterator[SmtpServer]:
    server = SmtpServer(password=into.password, **into.smtp_delivery())
    with _Timer(name):
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_server(dovecot: DovecotServer) -> Iterator[SmtpServer]:
    yield from _serve_smtp("smtp", dovecot)


_Server = TypeVar("_Server", bound=ImapTestServer)


def _serve_imap(name: str, server: _Server) -> Iterator[_Server]:
    try:
        with _Timer(name):
            server.start()
    except ServiceUnavailableError as exc:
        _unavailable(exc)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def courier() -> Iterator[CourierServer]:
    yield from _serve_imap("courier", CourierServer())


@pytest.fixture(scope="session")
def courier_smtp(courier: CourierServer) -> Iterator[SmtpServer]:
    yield from _serve_smtp("courier-smtp", courier)


@pytest.fixture(scope="session")
def mailutils() -> Iterator[MailutilsServer]:
    yield from _serve_imap("mailutils", MailutilsServer())


@pytest.fixture(scope="session")
def mailutils_smtp(mailutils: MailutilsServer) -> Iterator[SmtpServer]:
    yield from _serve_smtp("mailutils-smtp", mailutils)


@pytest.fixture
def mail_password(dovecot: DovecotServer) -> str:
    return dovecot.password


@pytest.fixture
def unique_address() -> Callable[..., str]:
    """`unique_address(domain="acme.test", prefix="prospect")` -> a fresh address."""
    return make_address
