"""The chaos run's services and processes: started, pointed at each other, watched.

PostgreSQL, a private `redis-server` with AOF `appendfsync everysec` (the
production setting), Dovecot, the SMTP server and the TLS fake Salesforce
running as its own process; then every Procfile process (`web`, two
`worker`s, `sync`, `cron`, `listener`, `events`) from the Procfile
(`tests.stack`), with the run's environment. A process that exits without
being killed is noted and started again (`watch`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from alembic import command
from alembic.config import Config

from config import get_settings
from core import db as core_db
from core import redis as core_redis
from tests.conftest import service_environment
from tests.fakes.salesforce.server import FakeSalesforceProcess
from tests.services import postgres
from tests.services.dovecot import DovecotServer
from tests.services.redis import PrivateRedisServer
from tests.services.smtp import SmtpServer
from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("web", "worker", "worker-2", "sync", "cron", "listener", "events")

# The Salesforce outbox and the clocks, run fast (as in test_salesforce_faults). The
# cron ticks (sequence steps, resumes, one-offs, the Salesforce flush) every 3 s, not
# 1 s: each tick is a forked job on the lowest queue, and at 1 s they piled up by
# the thousand behind the sends, a third of the workers' time (production: 10 s, 30 s).
# A hit within the scanner window of its email's sending is a scanner's, never
# counted: 3 s here, and the harness's readers open mail later than that.
FAST = {
    "SIGHTLINE_SALESFORCE_FLUSH_SECONDS": "3",
    "SIGHTLINE_SALESFORCE_BATCH_SECONDS": "0",
    "SIGHTLINE_SALESFORCE_LEASE_SECONDS": "6",
    "SIGHTLINE_SALESFORCE_RETRY_BASE_SECONDS": "1",
    "SIGHTLINE_SALESFORCE_PARK_SECONDS": "2",
    "SIGHTLINE_SALESFORCE_TIMEOUT_SECONDS": "2",
    "SIGHTLINE_SALESFORCE_ENGAGEMENT_DEBOUNCE_SECONDS": "1",
    "SIGHTLINE_SALESFORCE_WHO_RETRY_SECONDS": "2",
    "SIGHTLINE_SEQUENCE_TICK_SECONDS": "3",
    "SIGHTLINE_SYNC_POLL_SECONDS": "10",
    "SIGHTLINE_SEND_RECOVERY_SECONDS": "10",
    "SIGHTLINE_TRACKING_SCANNER_SECONDS": "3",
}
SCANNER_SECONDS = float(FAST["SIGHTLINE_TRACKING_SCANNER_SECONDS"])


class Services:
    """PostgreSQL, a private Redis with AOF everysec, Dovecot, SMTP and the fake org.

    Dovecot and the SMTP server may be handed in (the test suite's session
    servers); whatever is started here is stopped by `stop()`.
    """

    def __init__(self, work_dir: Path, *, dovecot: Any = None, smtp: Any = None) -> None:
        self.work_dir = work_dir
        self.dovecot = dovecot
        self.smtp = smtp
        self._own_dovecot = dovecot is None
        self._own_smtp = smtp is None
        self.database: Any = None
        self.redis: Any = None
        self.salesforce: Any = None

    def start(self) -> Services:
        self.database = postgres.TemporaryDatabase(postgres.find_server()).create()
        self.redis = PrivateRedisServer(appendonly=True, appendfsync="everysec").start()
        if self.dovecot is None:
            self.dovecot = DovecotServer().start()
        if self.smtp is None:
            self.smtp = SmtpServer(
                lmtp_host=self.dovecot.host,
                lmtp_port=self.dovecot.lmtp_port,
                password=self.dovecot.password,
            ).start()
        state_dir = self.work_dir / "salesforce"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.salesforce = FakeSalesforceProcess(state_dir).start()
        return self

    def stop(self) -> None:
        for action in (
            lambda: self.salesforce and self.salesforce.stop(),
            lambda: self._own_smtp and self.smtp and self.smtp.stop(),
            lambda: self._own_dovecot and self.dovecot and self.dovecot.stop(),
            lambda: self.redis and self.redis.close(),
            lambda: self.database and self.database.drop(),
        ):
            with contextlib.suppress(Exception):
                action()

    def ca_bundle(self) -> str:
        """The fake org's CA plus whatever bundle this machine already trusts."""
        base = os.environ.get("REQUESTS_CA_BUNDLE")
        extra = Path(base).read_text() if base and Path(base).is_file() else ""
        combined = self.work_dir / "requests-ca-bundle.pem"
        combined.write_text(Path(self.salesforce.ca_bundle).read_text() + "\n" + extra)
        return str(combined)


def environment(services: Services, pause_seconds: int, port: int) -> dict[str, str]:
    """What every process of the run gets: the services, the fake org, fast clocks."""
    oauth = services.salesforce.admin.oauth()
    return {
        **service_environment(
            services.database.url, services.redis.url(db=0), services.work_dir / "var"
        ),
        **FAST,
        "PORT": str(port),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "SIGHTLINE_AUTO_REPLY_PAUSE_SECONDS": str(pause_seconds),
        "SALESFORCE_LOGIN_URL": services.salesforce.instance_url,
        "SALESFORCE_CLIENT_ID": oauth["client_id"],
        "SALESFORCE_CLIENT_SECRET": oauth["client_secret"],
        "SALESFORCE_USERNAME": oauth["username"],
        "SALESFORCE_PASSWORD": oauth["password"],
        "SALESFORCE_SECURITY_TOKEN": oauth["security_token"],
        "REQUESTS_CA_BUNDLE": services.ca_bundle(),
        "LOG_LEVEL": "INFO",
    }


@contextlib.contextmanager
def pointed_at(env: dict[str, str]) -> Iterator[None]:
    """This process's settings, database and Redis clients on the run's services."""

    def clear() -> None:
        get_settings.cache_clear()
        core_db.reset_for_tests()
        core_redis.get_redis.cache_clear()

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        clear()


def migrate() -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def start_stack(env: dict[str, str], log_dir: Path, base_url: str, events_keep_name: bool) -> Stack:
    """Every Procfile process, two workers; returns once the web process answers.

    With `events_keep_name`, a killed `events` comes back under its old consumer
    name and drains its own pending entries first, as a Heroku dyno does
    (DYNO=events.1); else as a new consumer, and the dead one's entries wait for
    XAUTOCLAIM (60 s idle), as when a consumer is gone for good.
    """
    stack = Stack(env, log_dir)
    stack.commands["worker-2"] = stack.commands["worker"]
    if events_keep_name:
        stack.commands["events"] = ["env", "DYNO=events.1", *stack.commands["events"]]
    stack.start(*PROCESSES)

    def web_answers() -> bool:
        try:
            return requests.get(base_url + "/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    stack.wait_for("the web process", web_answers, timeout=90, interval=0.5)
    return stack


def watch(stack: Stack, exits: list[str], say: Callable[[str], None]) -> None:
    """A process that died without being killed is noted in `exits` and started again."""
    for name, proc in list(stack.running.items()):
        if proc.poll() is not None:
            exits.append(f"{name} exited {proc.returncode}")
            say(f"chaos: {name} exited on its own ({proc.returncode}); restarting")
            stack.running.pop(name)
            stack.start(name)


def scan_logs(log_dir: Path, secrets: dict[str, str]) -> list[str]:
    """`<file>:<line> <secret name>` for every line of every log that holds a secret."""
    found = []
    for path in sorted(log_dir.glob("*.log")):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for name, value in secrets.items():
                if value and len(value) >= 6 and value in line:
                    found.append(f"{path.name}:{number} {name}")
    return found
