"""Signals end to end, on real parts: Dovecot, a real SMTP server, the fake org,
and the Procfile's worker, cron and listener processes.

Each prospect's step 1 goes out through SMTP and lands in their Dovecot inbox;
what comes back is built from that very message and delivered into the
sender's Dovecot mailbox the way it would arrive: a Postfix DSN (original
attached) through LMTP from the null sender, an ARF complaint and an Exchange
out-of-office through SMTP. The listener's IDLE wakes a sync; the rules act;
the cron process resumes what was paused and sends what is due.

    hard bounce  → bounced, step 2 never sent, a Salesforce Task
    complaint    → opted out, step 2 never sent, a Salesforce Task
    out-of-office→ paused, resumed by cron after the (shortened) default pause,
                   then step 2 goes out
    delay notice → recorded, nothing halted: step 2 goes out on schedule
    success notice (Action: deliverable, 2.0.0), a teammate's reply-all
                 → recorded, nothing halted, nothing re-sent
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings, get_settings
from tests.conftest import ApiClient, service_environment
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.test_core_loop import sent_messages, server
from tests.integration.test_signals import (
    arf_complaint,
    delay_notice,
    hard_bounce,
    out_of_office,
    person_reply,
)
from tests.integration.test_signals_not_the_prospect import success_notice
from tests.services.dovecot import DovecotServer, has_message_id, unique_address
from tests.stack import Stack

ANY_TIME = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "00:00",
    "end": "24:00",
}

# The rules run on both databases through the real inbound path in test_signals.py
# and test_signals_not_the_prospect.py; here the processes, on PostgreSQL.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

STEP_2_DELAY = 12
PAUSE_SECONDS = 4


@pytest.fixture
def stack(
    env: Settings,
    database_url: str,
    redis_url: str,
    fake_salesforce: FakeSalesforce,
    fake_salesforce_ca_bundle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    extra = {
        "SALESFORCE_INSTANCE_URL": fake_salesforce.instance_url,
        "SALESFORCE_ACCESS_TOKEN": fake_salesforce.access_token,
        "SIGHTLINE_SEQUENCE_TICK_SECONDS": "1",
        "SIGHTLINE_SALESFORCE_FLUSH_SECONDS": "1",
        "SIGHTLINE_SYNC_POLL_SECONDS": "5",
        # An out-of-office without a return date pauses this long (3 days by default).
        "SIGHTLINE_AUTO_REPLY_PAUSE_SECONDS": str(PAUSE_SECONDS),
    }
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    environment = {
        **service_environment(database_url, redis_url, env.var_dir),
        **extra,
        "REQUESTS_CA_BUNDLE": fake_salesforce_ca_bundle,
    }
    running = Stack(environment, tmp_path / "logs").start("worker", "cron", "listener")
    yield running
    running.stop()


def start(
    api: ApiClient, dovecot: DovecotServer, smtp_server: Any, sender: str, prospects: list[str]
) -> list[int]:
    """One mailbox, one two-step sequence, one enrolment per prospect."""
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
            "name": "Intro",
            "mailbox_id": mailbox.json["id"],
            # About what is sent, not when: any day, any hour (the default is Mon-Fri 08-18).
            "send_window": ANY_TIME,
            "steps": [
                {
                    "delay_seconds": 0,
                    "subject": "Hello {{first_name}}",
                    "body_html": "<p>Hi {{first_name}}, a quick question.</p>",
                },
                {
                    "delay_seconds": STEP_2_DELAY,
                    "body_html": "<p>Just bumping this.</p>",
                    "same_thread": True,
                },
            ],
        },
    )
    assert sequence.status_code == 201, sequence.json
    ids = []
    for prospect in prospects:
        enrollment = api.post(
            "/api/v1/enrollments",
            {"sequence_id": sequence.json["id"], "email": prospect, "name": "Dana Scully"},
        )
        assert enrollment.status_code == 201, enrollment.json
        ids.append(enrollment.json["id"])
    return ids


def step_1(
    api: ApiClient, stack: Stack, dovecot: DovecotServer, enrollment_id: int, prospect: str
) -> tuple[str, bytes]:
    """Step 1's Message-ID and its bytes as they arrived in the prospect's inbox."""
    sent = stack.wait_for("step 1 to be sent", lambda: sent_messages(api, enrollment_id))[0]
    received = dovecot.wait_for_message(prospect, has_message_id(sent["message_id"]))
    # CRLF line ends: these bytes are re-sent over SMTP, which takes bare LFs as one long line.
    return sent["message_id"], received.as_bytes(policy=received.policy.clone(linesep="\r\n"))


def state_of(api: ApiClient, enrollment_id: int) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/api/v1/enrollments/{enrollment_id}").json
    return body


def event_kinds(api: ApiClient, enrollment_id: int) -> list[str]:
    events = api.get(f"/api/v1/events?enrollment_id={enrollment_id}").json["events"]
    return [e["kind"] for e in events]


def test_bounce_and_complaint_halt_and_reach_salesforce(
    api: ApiClient,
    stack: Stack,
    dovecot: DovecotServer,
    smtp_server: Any,
    fake_salesforce: FakeSalesforce,
) -> None:
    sender = unique_address("seller.test", "rep")
    bouncing = unique_address("acme.test", "gone")
    complaining = unique_address("acme.test", "angry")
    for prospect in (bouncing, complaining):
        fake_salesforce.add_contact(prospect)
    bounced_id, complained_id = start(api, dovecot, smtp_server, sender, [bouncing, complaining])

    _, original = step_1(api, stack, dovecot, bounced_id, bouncing)
    # The sender's own MTA reports the failure: from the null sender, over LMTP.
    dovecot.deliver(sender, hard_bounce(original, sender, bouncing), mail_from="")
    _, original = step_1(api, stack, dovecot, complained_id, complaining)
    fbl = "fbl@feedback.mailprovider.test"
    with smtp_server.connect(login=fbl) as smtp:
        smtp.sendmail(fbl, [sender], arf_complaint(original, sender, complaining))

    bounced = stack.wait_for(
        "the bounce to stop the enrolment",
        lambda: (s := state_of(api, bounced_id))["state"] == "bounced" and s,
    )
    assert bounced["state_reason"] == f"hard bounce 5.1.1 userunknown ({bouncing})"
    complained = stack.wait_for(
        "the complaint to opt the prospect out",
        lambda: (s := state_of(api, complained_id))["state"] == "opted_out" and s,
    )
    assert complained["state_reason"] == f"spam complaint (abuse) via {fbl}"

    # The address is dead for the whole team: enrolling it again is refused.
    sequence_id = api.get(f"/api/v1/enrollments/{bounced_id}").json["sequence_id"]
    again = api.post(
        "/api/v1/enrollments", {"sequence_id": sequence_id, "email": bouncing, "name": "Dana"}
    )
    assert again.status_code == 422
    assert "undeliverable" in again.json["error"]["message"]

    stack.wait_for(
        "Tasks for two sends, the bounce and the complaint",
        lambda: len(fake_salesforce.tasks()) >= 4,
        timeout=30,
    )
    # Step 2 falls due while we wait; neither prospect ever gets it.
    time.sleep(STEP_2_DELAY + 3)
    for enrollment_id in (bounced_id, complained_id):
        assert len(sent_messages(api, enrollment_id)) == 1
    for prospect in (bouncing, complaining):
        assert len(smtp_server.sent_to(prospect)) == 1
    assert sorted(t["Subject"] for t in fake_salesforce.tasks()) == [
        "Email bounced: Hello Dana",
        "Email: Hello Dana",
        "Email: Hello Dana",
        "Spam complaint: Hello Dana",
    ]
    assert event_kinds(api, bounced_id) == ["sent", "bounce"]
    assert event_kinds(api, complained_id) == ["sent", "complaint"]


def test_out_of_office_pauses_and_cron_resumes_and_a_delay_halts_nothing(
    api: ApiClient,
    stack: Stack,
    dovecot: DovecotServer,
    smtp_server: Any,
) -> None:
    sender = unique_address("seller.test", "rep")
    away = unique_address("acme.test", "away")
    slow = unique_address("slow.test", "tom")
    away_id, slow_id = start(api, dovecot, smtp_server, sender, [away, slow])

    message_id, _ = step_1(api, stack, dovecot, away_id, away)
    ooo = out_of_office(message_id, away, sender, "I am currently out of the office.")
    with smtp_server.connect(login=away) as smtp:
        smtp.sendmail(away, [sender], ooo)
    _, original = step_1(api, stack, dovecot, slow_id, slow)
    dovecot.deliver(sender, delay_notice(original, sender, slow), mail_from="")

    paused = stack.wait_for(
        "the out-of-office to pause the enrolment",
        lambda: (s := state_of(api, away_id))["state"] == "paused" and s,
    )
    assert paused["state_reason"].startswith(f"auto-reply from {away} (no return date); resumes")
    assert paused["resume_at"] is not None
    stack.wait_for("the delay notice", lambda: "delayed" in event_kinds(api, slow_id))
    assert state_of(api, slow_id)["state"] == "active"

    # Cron resumes it after the pause; step 2 then goes out at once, in the thread.
    resumed = stack.wait_for(
        "cron to resume the enrolment",
        lambda: (s := state_of(api, away_id))["state"] == "active" and s,
        timeout=30,
    )
    assert [t["to_state"] for t in resumed["transitions"]] == ["active", "paused", "active"]
    assert resumed["transitions"][-1]["reason"] == "resumed after pause"

    def second_step() -> dict[str, Any] | None:
        sent = sent_messages(api, away_id)
        return sent[1] if len(sent) == 2 else None

    second = stack.wait_for("step 2 after the pause", second_step, timeout=30)
    assert second["in_reply_to"] == message_id
    dovecot.wait_for_message(away, has_message_id(second["message_id"]))

    # The delayed prospect's sequence went on as planned.
    stack.wait_for(
        "step 2 to the delayed prospect",
        lambda: len(sent_messages(api, slow_id)) == 2,
        timeout=STEP_2_DELAY + 20,
    )
    assert event_kinds(api, slow_id) == ["sent", "delayed", "sent"]
    assert event_kinds(api, away_id) == ["sent", "auto_reply", "sent"]


def test_a_success_notice_and_a_teammate_s_reply_all_halt_nothing(
    api: ApiClient,
    stack: Stack,
    dovecot: DovecotServer,
    smtp_server: Any,
) -> None:
    """A DSN with `Action: deliverable` / 2.0.0 must not be read as a soft bounce
    (the step would go out again), nor a manager's reply-all as the prospect's."""
    sender = unique_address("seller.test", "rep")
    delivered = unique_address("acme.test", "kim")
    watched = unique_address("acme.test", "lou")
    manager = unique_address("seller.test", "manager")
    delivered_id, watched_id = start(api, dovecot, smtp_server, sender, [delivered, watched])

    _, original = step_1(api, stack, dovecot, delivered_id, delivered)
    dovecot.deliver(
        sender, success_notice(original, sender, delivered, "deliverable"), mail_from=""
    )
    message_id, _ = step_1(api, stack, dovecot, watched_id, watched)
    reply_all = person_reply(message_id, manager, sender, "Let me know how it goes!")
    with smtp_server.connect(login=manager) as smtp:
        smtp.sendmail(manager, [sender], reply_all)

    stack.wait_for("the success notice", lambda: "other" in event_kinds(api, delivered_id))
    stack.wait_for("the teammate's reply", lambda: "teammate_reply" in event_kinds(api, watched_id))
    for enrollment_id in (delivered_id, watched_id):
        assert state_of(api, enrollment_id)["state"] == "active"
    stack.wait_for(
        "step 2 to both on schedule",
        lambda: all(len(sent_messages(api, e)) == 2 for e in (delivered_id, watched_id)),
        timeout=STEP_2_DELAY + 20,
    )
    # Step 1 went out once: the success notice re-sent nothing.
    assert len(smtp_server.sent_to(delivered)) == 2
    assert event_kinds(api, delivered_id) == ["sent", "other", "sent"]
    assert event_kinds(api, watched_id) == ["sent", "teammate_reply", "sent"]
