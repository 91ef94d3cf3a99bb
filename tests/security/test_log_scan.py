"""The log scanner (tests/security/log_scan.py) finds what it must: a clean run means something."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.conftest import TEST_SECRET_KEY
from tests.security import log_scan


def caught() -> list[str]:
    """What the watcher holds against this test, taken away so the test itself passes."""
    found, log_scan._watcher.found[:] = list(log_scan._watcher.found), []
    return found


def test_a_logged_secret_is_caught_even_when_the_formatter_would_redact_it() -> None:
    logging.getLogger("sightline.example").warning("connecting key=%s", TEST_SECRET_KEY)
    assert caught() == ["logger=sightline.example level=WARNING holds SECRET_KEY (tests)"]
    logging.getLogger("sightline.example").warning("connecting key=[redacted]")
    assert caught() == []


def test_a_secret_a_test_puts_in_the_environment_is_looked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", "GOCSPX-not-a-real-secret")
    try:
        raise RuntimeError("token exchange failed for GOCSPX-not-a-real-secret")
    except RuntimeError:
        logging.getLogger("worker.sync.gmail").exception("oauth_failed")
    assert caught() == ["logger=worker.sync.gmail level=ERROR holds GOOGLE_CLIENT_SECRET#1"]


def test_process_logs_are_scanned_line_by_line(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "web.log").write_text(f"level=INFO ok\nlevel=ERROR key={TEST_SECRET_KEY}\n")
    (tmp_path / "dovecot.log").write_text(TEST_SECRET_KEY)  # not one of our processes
    found = log_scan.scan_files(log_scan.process_logs(tmp_path), log_scan.secrets_in_use())
    assert found == [f"{logs / 'web.log'}:2 SECRET_KEY (tests)"]
    (logs / "web.log").unlink()  # planted here: the end-of-run scan must not count it


def test_values_too_plain_to_recognise_are_not_looked_for() -> None:
    secrets = log_scan.secrets_in_use({"GMAIL_PUSH_TOKEN": "x" * 32, "SECRET_KEY": "short"})
    assert "GMAIL_PUSH_TOKEN#1" not in secrets and "SECRET_KEY#1" not in secrets
