"""pytest plugin: no secret the test run used may appear in a log it produced.

Listed in tests/conftest.py's `pytest_plugins`, so it watches the whole suite:

- Every log record of this process (what our code hands to `logging`, before
  `RedactingFormatter` gets a chance to hide it: the formatter is a safety net,
  code must not log secrets in the first place) is checked against the
  secrets in use: the test SECRET_KEY and encryption key, the sign-in, IMAP,
  SMTP, Exchange and Salesforce passwords the fakes and services accept, and
  whatever secret-bearing variable a test put in the environment. A record
  that holds one fails the test that logged it (an error at teardown naming
  the logger and the secret).
- At the end, every log file the Procfile processes wrote under the run's temp
  folder (`tests.stack.Stack`: `…/logs/<process>.log`) is scanned the same
  way; a hit is listed in the summary and fails the run.

Values that cannot be told from ordinary text (shorter than 8 characters, or
one character repeated) are not looked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_FERNET_KEY, TEST_SECRET_KEY
from tests.fakes.ews import PASSWORD as EWS_PASSWORD
from tests.fakes.salesforce.oauth import DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD
from tests.services.dovecot import SHARED_PASSWORD

SIGN_IN_PASSWORD = "correct horse battery staple"  # every test user's (tests/integration/test_feed)
FIXED = {
    "SECRET_KEY (tests)": TEST_SECRET_KEY,
    "SIGHTLINE_ENCRYPTION_KEY (tests)": TEST_FERNET_KEY,
    "a user's sign-in password": SIGN_IN_PASSWORD,
    "the IMAP/SMTP password": SHARED_PASSWORD,
    "the Exchange password": EWS_PASSWORD,
    "the Salesforce consumer secret": DEFAULT_CLIENT_SECRET,
    "the Salesforce password": DEFAULT_PASSWORD,
}
# Environment variables whose values are secrets (comma-separated lists split).
SECRET_VARIABLES = (
    "SECRET_KEY",
    "SECRET_KEY_FALLBACKS",
    "SIGHTLINE_ENCRYPTION_KEY",
    "GOOGLE_CLIENT_SECRET",
    "MICROSOFT_CLIENT_SECRET",
    "GMAIL_PUSH_TOKEN",
    "SALESFORCE_ACCESS_TOKEN",
    "SALESFORCE_PASSWORD",
    "SALESFORCE_SECURITY_TOKEN",
    "SALESFORCE_CLIENT_SECRET",
)


def recognisable(value: str) -> bool:
    return len(value) >= 8 and len(set(value)) > 1


def secrets_in_use(environ: os._Environ[str] | dict[str, str] = os.environ) -> dict[str, str]:
    """Name → value of every secret to look for now."""
    found = {name: value for name, value in FIXED.items() if recognisable(value)}
    for variable in SECRET_VARIABLES:
        for index, raw in enumerate((environ.get(variable) or "").split(",")):
            value = raw.strip()
            if recognisable(value):
                found.setdefault(f"{variable}#{index + 1}", value)
    return found


def secrets_in(text: str, secrets: dict[str, str]) -> list[str]:
    """Names of the secrets `text` holds."""
    return [name for name, value in secrets.items() if value in text]


def scan_files(paths: Iterable[Path], secrets: dict[str, str]) -> list[str]:
    """`<path>:<line> <secret name>` for every line of every file that holds a secret."""
    found = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            found += [f"{path}:{number} {name}" for name in secrets_in(line, secrets)]
    return found


def process_logs(root: Path) -> list[Path]:
    """The Procfile processes' logs (tests.stack.Stack) under `root`."""
    return sorted(p for p in root.rglob("*.log") if p.parent.name == "logs")


class SecretWatcher(logging.Handler):
    """Keeps every record that holds a secret in use."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self.found: list[str] = []
        self.seen: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.plain.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted holds no line to scan
            return
        secrets = secrets_in_use()  # now: a test may have changed the environment
        self.seen.update(secrets)
        for name in secrets_in(line, secrets):
            self.found.append(f"logger={record.name} level={record.levelname} holds {name}")


_watcher = SecretWatcher()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_watcher)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(_watcher)


@pytest.fixture(autouse=True)
def _no_secret_in_logs() -> Iterator[None]:
    _watcher.found.clear()
    yield
    _watcher.seen.update(secrets_in_use())
    found, _watcher.found[:] = list(_watcher.found), []
    assert not found, "a secret was logged:\n" + "\n".join(dict.fromkeys(found))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    try:
        root = factory.getbasetemp()
    except (OSError, ValueError):
        return
    found = scan_files(process_logs(root), {**_watcher.seen, **secrets_in_use()})
    session.config.stash[_FILE_HITS] = found
    if found and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_FILE_HITS = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    found = terminalreporter.config.stash.get(_FILE_HITS, [])
    if found:
        terminalreporter.section("secrets in process logs", red=True)
        for line in found[:50]:
            terminalreporter.write_line(line)
