"""Tracking applied at send time, end to end on real parts.

A sequence step goes out through the real SMTP server into the prospect's Dovecot
INBOX. The delivered HTML carries the pixel and signed click links on the public
base URL; the plain-text part keeps the real links. Loading the pixel and
following the link through the real `web` process, with the real `events`
process draining the stream, shows up as an open and a click on the enrolment.
A team with tracking off gets neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import update

from config import Settings, get_settings
from core.db import session_scope
from core.models import Team
from tests.conftest import ApiClient, service_environment
from tests.integration.test_core_loop import sent_messages, server
from tests.services import process
from tests.services.dovecot import DovecotServer, has_message_id, unique_address
from tests.stack import Stack
from web.tracking.app import PIXEL

ANY_TIME = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "00:00",
    "end": "24:00",
}

# Processes on PostgreSQL (production); test_make_run.py loads a pixel through make
# run on SQLite, and the hit rules run on both in test_tracking_rules.py.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131 Safari/537.36"
DESTINATION = "https://acme.test/pricing?plan=team&utm=mail"


@pytest.fixture
def stack(
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Stack, str]]:
    port = process.free_port()
    base = f"http://127.0.0.1:{port}"
    extra = {
        "PUBLIC_BASE_URL": base,
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "SIGHTLINE_SEQUENCE_TICK_SECONDS": "1",
        # The test opens the email seconds after it is sent: not a scanner here.
        "SIGHTLINE_TRACKING_SCANNER_SECONDS": "0",
    }
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    environment = {**service_environment(database_url, redis_url, env.var_dir), **extra}
    running = Stack(environment, tmp_path / "logs").start("web", "events", "worker", "cron")

    def answers() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    running.wait_for("the web process", answers, timeout=30)
    yield running, base
    running.stop()


def enroll(api: ApiClient, dovecot: DovecotServer, smtp_server: Any, sender: str) -> dict[str, Any]:
    mailbox = api.post(
        "/api/v1/mailboxes",
        {
            "kind": "imap",
            "email": sender,
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
        },
    )
    assert mailbox.status_code == 201, mailbox.json
    sequence = api.post(
        "/api/v1/sequences",
        {
            "name": "Tracked",
            "mailbox_id": mailbox.json["id"],
            # About what is sent, not when: any day, any hour (the default is Mon-Fri 08-18).
            "send_window": ANY_TIME,
            "steps": [
                {
                    "delay_seconds": 0,
                    "subject": "Pricing for {{first_name}}",
                    "body_html": (
                        "<html><body><p>Hi {{first_name}},</p>"
                        f'<p>Our <a href="{DESTINATION}">team plan</a> fits. '
                        '<a href="mailto:rep@seller.test">Write back</a>.</p></body></html>'
                    ),
                }
            ],
        },
    )
    assert sequence.status_code == 201, sequence.json
    return {"sequence_id": sequence.json["id"]}


def enrol_and_receive(
    api: ApiClient, stack: Stack, dovecot: DovecotServer, sequence_id: int
) -> tuple[int, EmailMessage]:
    prospect = unique_address("acme.test", "dana")
    enrollment = api.post(
        "/api/v1/enrollments", {"sequence_id": sequence_id, "email": prospect, "name": "Dana"}
    )
    assert enrollment.status_code == 201, enrollment.json
    enrollment_id = enrollment.json["id"]
    sent = stack.wait_for("the step to be sent", lambda: sent_messages(api, enrollment_id))[0]
    return enrollment_id, dovecot.wait_for_message(prospect, has_message_id(sent["message_id"]))


def parts(message: EmailMessage) -> tuple[str, str]:
    html = message.get_body(preferencelist=("html",))
    text = message.get_body(preferencelist=("plain",))
    assert html is not None and text is not None
    return html.get_content(), text.get_content()


def test_opens_and_clicks_of_a_sent_step_reach_the_enrolment(
    api: ApiClient,
    stack: tuple[Stack, str],
    dovecot: DovecotServer,
    smtp_server: Any,
) -> None:
    running, base = stack
    sender = unique_address("seller.test", "rep")
    sequence_id = enroll(api, dovecot, smtp_server, sender)["sequence_id"]
    enrollment_id, message = enrol_and_receive(api, running, dovecot, sequence_id)
    html, text = parts(message)

    pixels = re.findall(rf'<img src="({re.escape(base)}/o/[^"]+\.gif)"', html)
    clicks = re.findall(rf'href="({re.escape(base)}/c/[^"]+)"', html)
    assert len(pixels) == 1 and len(clicks) == 1
    assert 'href="mailto:rep@seller.test"' in html
    assert DESTINATION not in html  # only inside the signed token
    assert DESTINATION in text  # the plain-text part keeps the real link

    opened = requests.get(pixels[0], headers={"User-Agent": CHROME}, timeout=10)
    assert (opened.status_code, opened.content) == (200, PIXEL)
    followed = requests.get(
        clicks[0], headers={"User-Agent": CHROME}, timeout=10, allow_redirects=False
    )
    assert (followed.status_code, followed.headers["Location"]) == (302, DESTINATION)

    def kinds() -> list[str] | None:
        found = [
            e["kind"]
            for e in api.get(f"/api/v1/events?enrollment_id={enrollment_id}").json["events"]
        ]
        return found if {"open", "click"} <= set(found) else None

    assert sorted(running.wait_for("the open and the click", kinds, timeout=20)) == [
        "click",
        "open",
        "sent",
    ]


def test_a_team_with_tracking_off_sends_untouched_html(
    api: ApiClient,
    stack: tuple[Stack, str],
    dovecot: DovecotServer,
    smtp_server: Any,
) -> None:
    running, _ = stack
    with session_scope() as session:
        session.execute(update(Team).values(tracking_enabled=False))
    sender = unique_address("seller.test", "rep")
    sequence_id = enroll(api, dovecot, smtp_server, sender)["sequence_id"]
    _, message = enrol_and_receive(api, running, dovecot, sequence_id)
    html, _ = parts(message)
    assert "/o/" not in html and "/c/" not in html
    assert f'href="{DESTINATION}"' in html.replace("&amp;", "&")
