"""Healthy mailboxes: a daily cap, spacing with jitter, provider quotas, the bounce guard.

Real claims on both databases; the SMTP quota through the real SMTP test server
delivering into Dovecot; hard bounces through `handle_inbound`; the pages
through the Flask client.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Enrollment,
    EnrollmentState,
    Event,
    Mailbox,
    SendStatus,
    SentMessage,
    Sequence,
    SequencePause,
    SequenceStep,
    Team,
    utcnow,
)
from tests.conftest import ApiClient, create_user
from tests.integration.test_api import mailbox_body
from tests.integration.test_feed import PASSWORD, csrf_from, sign_in
from tests.integration.test_signals import deliver_inbound, hard_bounce
from tests.services.dovecot import DovecotServer
from tests.services.smtp import SmtpServer
from worker.sequences import claiming, delivering, enrolling
from worker.sequences.pacing import pause_mailbox
from worker.sync.base import SendResult
from worker.sync.quota import next_utc_midnight

SENDER = "rep@seller.test"


def make_team(
    *,
    daily_cap: int | None = None,
    spacing: int | None = None,
    credentials: dict[str, object] | None = None,
    sender: str = SENDER,
) -> tuple[int, int, int]:
    """(team, mailbox, sequence): a one-step sequence that may send at any hour."""
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id,
            kind="imap",
            email=sender,
            credentials_encrypted=encrypt_json(credentials or {}),
            daily_cap=daily_cap,
            send_spacing_seconds=spacing,
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(
            team_id=team.id,
            mailbox_id=mailbox.id,
            name="Intro",
            send_days=127,
            send_start_minute=0,
            send_end_minute=24 * 60,
        )
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Hello", body_html="<p>Hi</p>")
        ]
        session.add(sequence)
        session.flush()
        return team.id, mailbox.id, sequence.id


def enrol(sequence_id: int, count: int, at: datetime, domain: str = "acme.test") -> list[int]:
    with session_scope() as session:
        sequence = session.get_one(Sequence, sequence_id)
        return [
            enrolling.enroll(
                session, sequence=sequence, email=f"p{i}@{domain}", name=None, now=at
            ).id
            for i in range(count)
        ]


def claim(enrollment_id: int, now: datetime) -> int | None:
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, now)
        return sent.id if sent else None


def enrolment(enrollment_id: int) -> Enrollment:
    with session_scope() as session:
        row = session.get_one(Enrollment, enrollment_id)
        session.expunge(row)
        return row


def mailbox_row(mailbox_id: int) -> Mailbox:
    with session_scope() as session:
        row = session.get_one(Mailbox, mailbox_id)
        session.expunge(row)
        return row


def test_a_step_over_the_daily_cap_waits_with_the_reason_and_goes_out_the_next_day(
    env: Settings,
) -> None:
    now = utcnow().replace(hour=15, minute=0)
    _, mailbox_id, sequence_id = make_team(daily_cap=2, spacing=0)
    first, second, third = enrol(sequence_id, 3, now - timedelta(minutes=1))

    assert claim(first, now) is not None
    assert claim(second, now) is not None
    assert claim(third, now) is None

    waiting = enrolment(third)
    midnight = next_utc_midnight(now)
    assert waiting.wait_reason == (
        "waiting: mailbox daily cap 2 reached, next send after 00:00 UTC"
    )
    assert (waiting.state, waiting.next_step) == (EnrollmentState.ACTIVE, 0)
    assert waiting.next_step_at is not None
    assert midnight <= waiting.next_step_at <= midnight + timedelta(seconds=80)
    assert mailbox_row(mailbox_id).next_send_at == midnight
    # Still the same day: it waits again, and nothing is claimed twice.
    assert claim(third, now + timedelta(hours=1)) is None

    tomorrow = waiting.next_step_at + timedelta(seconds=1)
    sent_id = claim(third, tomorrow)
    assert sent_id is not None
    assert enrolment(third).wait_reason is None
    with session_scope() as session:
        per_enrolment = session.execute(
            select(SentMessage.enrollment_id, func.count()).group_by(SentMessage.enrollment_id)
        ).all()
    assert sorted(per_enrolment) == sorted([(first, 1), (second, 1), (third, 1)])


def test_sends_are_spaced_with_jitter_and_the_step_says_when_it_goes(env: Settings) -> None:
    now = utcnow()
    _, mailbox_id, sequence_id = make_team(spacing=100)
    first, second = enrol(sequence_id, 2, now - timedelta(minutes=1))

    assert claim(first, now) is not None
    gap = mailbox_row(mailbox_id).next_send_at
    assert gap is not None
    assert now + timedelta(seconds=70) <= gap <= now + timedelta(seconds=130)

    assert claim(second, now + timedelta(seconds=5)) is None
    waiting = enrolment(second)
    assert waiting.wait_reason == (
        f"waiting: mailbox sends one message every ~100 s, next send after {gap:%H:%M:%S} UTC"
    )
    assert waiting.next_step_at is not None
    assert gap <= waiting.next_step_at <= gap + timedelta(seconds=100)
    assert claim(second, waiting.next_step_at) is not None


def test_steps_held_by_spacing_queue_one_gap_apart_instead_of_all_coming_due_at_once(
    env: Settings,
) -> None:
    now = utcnow()
    _, mailbox_id, sequence_id = make_team(spacing=100)
    first, *rest = enrol(sequence_id, 5, now - timedelta(minutes=1))
    assert claim(first, now) is not None
    gap = mailbox_row(mailbox_id).next_send_at
    assert gap is not None

    for enrollment_id in rest:
        assert claim(enrollment_id, now + timedelta(seconds=1)) is None

    for place, enrollment_id in enumerate(rest):
        slot = enrolment(enrollment_id).next_step_at
        assert slot is not None
        assert (
            gap + timedelta(seconds=100 * place)
            <= slot
            < gap + timedelta(seconds=100 * (place + 1))
        )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_racing_claims_of_one_mailbox_never_pass_its_cap(env: Settings) -> None:
    now = utcnow()
    _, _, sequence_id = make_team(daily_cap=3, spacing=0)
    ids = enrol(sequence_id, 12, now - timedelta(minutes=1))
    start = threading.Barrier(len(ids))
    claimed: list[int | None] = []

    def race(enrollment_id: int) -> None:
        start.wait()
        claimed.append(claim(enrollment_id, now))

    threads = [threading.Thread(target=race, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len([c for c in claimed if c is not None]) == 3
    waiting = [enrolment(i) for i in ids if enrolment(i).next_step == 0]
    assert len(waiting) == 9
    assert all((w.wait_reason or "").startswith("waiting: mailbox daily cap 3") for w in waiting)


def test_an_smtp_quota_answer_pauses_the_mailbox_and_the_step_goes_out_after_it(
    env: Settings, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    sender = "quota-rep@seller.test"
    dovecot.ensure_user(sender)
    prospect = "p0@acme.test"
    dovecot.ensure_user(prospect)
    server = {"username": sender, "security": "none"}
    imap = {"host": dovecot.host, "port": dovecot.imap_port, "password": dovecot.password}
    smtp = {"host": smtp_server.host, "port": smtp_server.port, "password": smtp_server.password}
    credentials = {"imap": {**server, **imap}, "smtp": {**server, **smtp}, "append_to_sent": False}
    _, mailbox_id, sequence_id = make_team(spacing=0, credentials=credentials, sender=sender)
    (enrollment_id,) = enrol(sequence_id, 1, utcnow() - timedelta(minutes=1))
    smtp_server.set_over_quota(sender)
    try:
        sent_id = claim(enrollment_id, utcnow())
        assert sent_id is not None
        outcome = delivering.deliver(sent_id)
    finally:
        smtp_server.set_over_quota()

    now = utcnow()
    assert outcome.status == "waiting"
    paused = mailbox_row(mailbox_id)
    assert paused.paused_until == next_utc_midnight(now)
    assert "5.4.5 Daily user sending limit exceeded" in (paused.pause_reason or "")
    waiting = enrolment(enrollment_id)
    assert (waiting.state, waiting.next_step) == (EnrollmentState.ACTIVE, 0)
    assert waiting.next_step_at == paused.paused_until
    assert (waiting.wait_reason or "").startswith(
        f"waiting: mailbox paused until {paused.paused_until:%Y-%m-%d} 00:00 UTC"
    )
    with session_scope() as session:
        assert session.get_one(SentMessage, sent_id).status == SendStatus.CANCELLED

    def accepted() -> list[str | None]:
        return [e.message_id for e in smtp_server.sent_to(prospect) if e.message_id in ours()]

    def ours() -> set[str]:
        with session_scope() as session:
            return set(session.scalars(select(SentMessage.message_id)))

    assert accepted() == []
    # Before the reset nothing is claimed; after it the same step goes out, once.
    assert claim(enrollment_id, now + timedelta(hours=1) if now.hour < 22 else now) is None
    assert waiting.next_step_at is not None
    again = claim(enrollment_id, waiting.next_step_at + timedelta(seconds=1))
    assert again is not None
    assert delivering.deliver(again).status == "sent"
    assert len(accepted()) == 1
    assert mailbox_row(mailbox_id).paused_at is None


def bounce_report(sent_id: int, recipient: str) -> bytes:
    with session_scope() as session:
        message_id = session.get_one(SentMessage, sent_id).message_id
    original = EmailMessage()
    original["From"] = SENDER
    original["To"] = recipient
    original["Subject"] = "Hello"
    original["Message-ID"] = message_id
    original.set_content("Hi.")
    return hard_bounce(original.as_bytes(), SENDER, recipient)


@pytest.mark.parametrize(("bounces", "paused"), [(1, False), (2, True)])
def test_the_bounce_guard_pauses_a_mailbox_and_sequence_past_the_threshold_and_tells_the_team(
    app: Flask, bounces: int, paused: bool
) -> None:
    now = utcnow()
    team_id, mailbox_id, sequence_id = make_team(spacing=0)
    ids = enrol(sequence_id, 20, now - timedelta(minutes=1))
    sent_ids = []
    for enrollment_id in ids:
        sent_id = claim(enrollment_id, now)
        assert sent_id is not None
        with session_scope() as session:
            message_id = session.get_one(SentMessage, sent_id).message_id
        delivering._record_sent(sent_id, SendResult(message_id=message_id))
        sent_ids.append(sent_id)
    later = enrol(sequence_id, 1, now, domain="globex.test")

    for i in range(bounces):
        assert deliver_inbound(bounce_report(sent_ids[i], f"p{i}@acme.test")).status == "recorded"

    box = mailbox_row(mailbox_id)
    assert (box.paused_at is not None) is paused
    with session_scope() as session:
        pause = session.get(SequencePause, sequence_id)
        told = session.scalars(select(Event).where(Event.kind == "sending_paused")).all()
        assert (pause is not None) is paused
        assert len(told) == (2 if paused else 0)
    if not paused:
        return
    reason = "bounce guard: 2 of the last 20 sends hard-bounced (10 %, above 8 %)"
    assert box.paused_until is None
    assert box.pause_reason == reason
    assert claim(later[0], utcnow()) is None
    assert (enrolment(later[0]).wait_reason or "").startswith(f"waiting: sequence paused: {reason}")

    # Every user of the team sees it: in the Live Feed and on the mailboxes page.
    create_user(app, "ann@seller.test", "Sales", "--password", PASSWORD)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Team)) == 1, team_id
    client = app.test_client()
    assert sign_in(client, "ann@seller.test").status_code == 302
    feed = client.get("/feed/items?kind=sending_paused").get_json()
    texts = [item["text"] for item in feed["items"]]
    assert (
        f"Sending paused for mailbox {SENDER}: {reason}. Resume it on the Mailboxes page." in texts
    )
    page = client.get("/mailboxes").get_data(as_text=True)
    assert "Sending paused" in page and reason in page
    assert f"paused-sequence-{sequence_id}" in page

    # Resuming both sends the waiting step at once.
    token = csrf_from(client.get("/mailboxes").get_data(as_text=True))
    client.post(f"/mailboxes/{mailbox_id}/resume", data={"csrf_token": token})
    client.post(f"/mailboxes/sequences/{sequence_id}/resume", data={"csrf_token": token})
    assert mailbox_row(mailbox_id).paused_at is None
    waiting = enrolment(later[0])
    assert waiting.next_step_at is not None and waiting.next_step_at <= utcnow()
    assert claim(later[0], utcnow()) is not None


def test_the_api_sets_a_mailbox_cap_and_spacing_shows_a_pause_and_resumes_it(
    api: ApiClient,
) -> None:
    created = api.post("/api/v1/mailboxes", mailbox_body()).get_json()
    path = f"/api/v1/mailboxes/{created['id']}"
    assert (created["daily_cap"], created["daily_cap_in_force"], created["sends_today"]) == (
        None,
        300,
        0,
    )

    def patch(body: object) -> Any:
        return api.client.patch(
            path, data=json.dumps(body), headers=api._headers(), content_type="application/json"
        )

    changed = patch({"daily_cap": 120, "send_spacing_seconds": 200})
    assert changed.status_code == 200
    body = changed.get_json()
    assert (body["daily_cap"], body["daily_cap_in_force"], body["send_spacing_seconds"]) == (
        120,
        120,
        200,
    )
    refused = patch({"daily_cap": 0})
    assert refused.status_code == 422
    assert "daily_cap" in refused.get_json()["error"]["fields"]
    assert patch({"daily_cap": "lots"}).status_code == 422
    assert patch({"pace": 1}).status_code == 422

    with session_scope() as session:
        pause_mailbox(session, created["id"], "bounce guard: test", utcnow(), None)
    shown = api.get(path).get_json()
    assert (shown["pause_reason"], shown["paused_until"]) == ("bounce guard: test", None)
    assert shown["paused_at"] is not None
    resumed = patch({"resume": True}).get_json()
    assert (resumed["paused_at"], resumed["pause_reason"]) == (None, None)
    # Left out: kept; null: back to the default for its kind.
    assert patch({"send_spacing_seconds": None}).get_json()["daily_cap"] == 120
    assert patch({"daily_cap": None}).get_json()["daily_cap_in_force"] == 300
