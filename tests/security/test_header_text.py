"""Text bound for a mail header is one line, and a message that cannot be built fails, visibly.

A subject with CR, LF or U+2028 used to be saved through the API; building the
MIME then raised on every attempt, the message stayed `sending` and the
recovery cron handed it over again forever. Now:

- every header-bound field a person types is refused at input with the reason
  (the API's 422 names the field; the forms' error summary says which field);
- a value filled in at send time from stored data (a prospect's company with a
  line break, from an import or Salesforce) is made one line;
- a message that still cannot be built (a row saved before these checks) is a
  failed send with its reason on the message, the enrolment paused with it,
  and the recovery cron leaves it alone.

The send runs through the real engine, the real SMTP server and Dovecot.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from config import Settings
from core.db import session_scope
from core.header_text import flatten_header_text, header_text_problem
from core.models import (
    Enrollment,
    EnrollmentState,
    Prospect,
    SendStatus,
    SentMessage,
    SequenceStep,
    utcnow,
)
from tests.conftest import ApiClient
from tests.integration.test_app_compose import add_mailbox, compose, run_send_jobs
from tests.integration.test_app_pages import csrf, signed_in
from tests.integration.test_core_loop import server
from tests.integration.test_feed import PASSWORD
from tests.services.dovecot import DovecotServer, has_message_id
from worker.sequences import claiming, delivering, enrolling, jobs

pytestmark = pytest.mark.integration

# Each ends a header line somewhere (Python's email package, a mail server, a
# mail client), or is a control character that must never reach the raw bytes.
BREAKS = {
    "CR": "\r",
    "LF": "\n",
    "CRLF": "\r\n",
    "VT": "\x0b",
    "FF": "\x0c",
    "FS": "\x1c",
    "NEL": "\x85",
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
    "BEL": "\x07",
    "ESC": "\x1b",
    "DEL": "\x7f",
    "CSI": "\x9b",
    "TAB": "\t",
}
FINE = ["Hello {{first_name}}", "Ünïcödé — “quotes” ✓", "Re: 50% off, today only!", "日本語"]


def test_the_rule_refuses_every_line_break_and_control_and_flattens_them() -> None:
    for name, ch in BREAKS.items():
        value = f"Hello{ch}Bcc: victim@evil.test"
        assert header_text_problem(value) is not None, name
        flat = flatten_header_text(value)
        assert header_text_problem(flat) is None and flat == "Hello Bcc: victim@evil.test", name
    assert flatten_header_text(" Acme \x07\x1b  Inc\u2028") == "Acme Inc"
    for value in FINE:
        assert header_text_problem(value) is None
        assert flatten_header_text(value) == value


# -- at input: the API ----------------------------------------------------------------


def _sequence_body(mailbox_id: int, subject: str) -> dict[str, Any]:
    return {
        "name": "Intro",
        "mailbox_id": mailbox_id,
        "steps": [{"delay_seconds": 0, "subject": subject, "body_html": "<p>Hi</p>"}],
    }


def test_the_api_refuses_a_subject_name_or_address_that_is_not_one_clean_line(
    env: Settings, api: ApiClient
) -> None:
    mailbox_id = _api_mailbox(api)
    for name, ch in BREAKS.items():
        answer = api.post(
            "/api/v1/sequences", _sequence_body(mailbox_id, f"Hello{ch}Bcc: victim@evil.test")
        )
        assert answer.status_code == 422, name
        fields = answer.json["error"]["fields"]
        assert "steps.0.subject" in fields, (name, fields)
    made = api.post("/api/v1/sequences", _sequence_body(mailbox_id, "Hello {{first_name}}"))
    assert made.status_code == 201, made.json
    for name, ch in BREAKS.items():
        if ch.isspace() and ch not in "\x1c\x85":
            continue  # whitespace at the ends is trimmed; inside, see below
        named = api.post(
            "/api/v1/enrollments",
            {"sequence_id": made.json["id"], "email": "dana@acme.test", "name": f"Dana{ch}X"},
        )
        assert named.status_code == 422 and "name" in named.json["error"]["fields"], name
        addressed = api.post(
            "/api/v1/enrollments", {"sequence_id": made.json["id"], "email": f"da{ch}na@acme.test"}
        )
        assert addressed.status_code == 422, name
        assert "email" in addressed.json["error"]["fields"], name
    inner = api.post(
        "/api/v1/enrollments",
        {"sequence_id": made.json["id"], "email": "dana@acme.test", "name": "Dana\u2028Scully"},
    )
    assert inner.status_code == 422 and "name" in inner.json["error"]["fields"]


def _api_mailbox(api: ApiClient) -> int:
    answer = api.post(
        "/api/v1/mailboxes",
        {
            "kind": "imap",
            "email": "rep@api.test",
            "imap": server("127.0.0.1", 1, "rep@api.test", "x"),
            "smtp": server("127.0.0.1", 1, "rep@api.test", "x"),
            "verify": False,
        },
    )
    assert answer.status_code == 201, answer.json
    return int(answer.json["id"])


# -- at input: the forms ----------------------------------------------------------------


def test_the_forms_refuse_a_subject_or_name_on_several_lines(app: Flask, env: Settings) -> None:
    from tests.conftest import create_user

    create_user(app, "rep@forms.test", "Forms", "--password", PASSWORD)
    mailbox_id = add_mailbox("rep@forms.test")
    client = signed_in(app, "rep@forms.test")
    bad = "Pricing\u2028Bcc: victim@evil.test"

    composed = compose(
        client, mailbox_id=str(mailbox_id), to="dana@acme.test", subject=bad, body_html="<p>Hi</p>"
    )
    assert composed.status_code == 422
    assert "Subject: must be one line" in composed.get_data(as_text=True)
    named = compose(
        client,
        mailbox_id=str(mailbox_id),
        to="Dana\u2029Scully <dana@acme.test>",
        subject="Pricing",
        body_html="<p>Hi</p>",
    )
    assert named.status_code == 422
    assert "must be one line" in named.get_data(as_text=True)

    template = client.post(
        "/templates/new",
        data={"csrf_token": csrf(client), "name": "T", "subject": bad, "body_html": "<p>Hi</p>"},
    )
    assert template.status_code == 422
    assert "Subject: must be one line" in template.get_data(as_text=True)

    sequence = client.post(
        "/sequences/new",
        data={"csrf_token": csrf(client), "name": "Intro", "mailbox_id": str(mailbox_id)},
    )
    assert sequence.status_code == 302, sequence.get_data(as_text=True)
    step_path = sequence.headers["Location"]
    step = client.post(
        step_path,
        data={
            "csrf_token": csrf(client),
            "delay": "0",
            "unit": "days",
            "subject": "Hi\r\nBcc: victim@evil.test",
            "body_html": "<p>Hi</p>",
        },
    )
    assert step.status_code == 422
    assert "Subject: must be one line" in step.get_data(as_text=True)
    with session_scope() as session:
        assert session.scalars(select(SequenceStep)).all() == []

    sequence_id = int(step_path.split("/")[2])
    enrolled = client.post(
        f"/sequences/{sequence_id}/enroll",
        data={"csrf_token": csrf(client), "email": "dana@acme.test", "name": "Dana\x00Scully"},
    )
    assert enrolled.status_code == 422
    assert "Name: contains a control character (U+0000)" in enrolled.get_data(as_text=True)


# -- at send time -------------------------------------------------------------------------


def _real_mailbox(app: Flask, sender: str, dovecot: DovecotServer, smtp_server: Any) -> int:
    from tests.conftest import create_user

    create_user(app, sender, "Sellers", "--password", PASSWORD)
    return add_mailbox(
        sender,
        {
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
            "folders": ["INBOX"],
            "append_to_sent": False,
        },
    )


def _sequence_for(sender: str, prospect: str, subject: str, company: str | None) -> int:
    """A one-step sequence and an enrolment, written as stored data (no input checks)."""
    from core.models import Mailbox, Sequence

    with session_scope() as session:
        mailbox = session.scalars(select(Mailbox).where(Mailbox.email == sender)).one()
        sequence = Sequence(team_id=mailbox.team_id, mailbox_id=mailbox.id, name="Legacy")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject=subject, body_html="<p>Hi</p>")
        ]
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session,
            sequence=sequence,
            email=prospect,
            name="Dana Scully",
            now=utcnow() - timedelta(seconds=1),
        )
        session.get_one(Prospect, enrollment.prospect_id).company = company
        return int(enrollment.id)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_stored_value_with_a_line_break_is_sent_on_one_line(
    app: Flask,
    env: Settings,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> None:
    sender, prospect = unique_address(prefix="rep"), unique_address()
    _real_mailbox(app, sender, dovecot, smtp_server)
    enrollment_id = _sequence_for(
        sender, prospect, "Hi {{first_name}} at {{company}}", "Acme\x07\r\nBcc: victim@evil.test"
    )
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, utcnow())
        assert sent is not None
        sent_id = sent.id
    assert delivering.deliver(sent_id).status == "sent"
    with session_scope() as session:
        sent = session.get_one(SentMessage, sent_id)
        assert sent.subject == "Hi Dana at Acme Bcc: victim@evil.test"
        message_id = sent.message_id
    delivered = dovecot.wait_for_message(prospect, has_message_id(message_id))
    assert delivered["Subject"] == "Hi Dana at Acme Bcc: victim@evil.test"
    assert delivered["Bcc"] is None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@evil.test", "Hi\u2028there", "Hi\x07there"])
def test_a_message_that_cannot_be_built_fails_with_its_reason_and_is_not_retried(
    app: Flask,
    env: Settings,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
    subject: str,
) -> None:
    sender, prospect = unique_address(prefix="rep"), unique_address()
    _real_mailbox(app, sender, dovecot, smtp_server)
    enrollment_id = _sequence_for(sender, prospect, "Hello", None)
    with session_scope() as session:
        claimed = claiming.claim_due_step(session, enrollment_id, utcnow())
        assert claimed is not None
        sent_id = claimed.id
        # A row saved before the input checks existed, claimed long ago: the
        # recovery cron's case.
        session.execute(
            update(SentMessage)
            .where(SentMessage.id == sent_id)
            .values(subject=subject, claimed_at=utcnow() - timedelta(hours=1))
        )
    assert jobs.recover_stuck_sends() == 1
    run_send_jobs()
    with session_scope() as session:
        sent = session.get_one(SentMessage, sent_id)
        assert sent.status == SendStatus.FAILED
        assert sent.error is not None and sent.error.startswith("the subject ")
        enrollment = session.get_one(Enrollment, enrollment_id)
        assert enrollment.state == EnrollmentState.PAUSED
        assert enrollment.state_reason == f"send failed: {sent.error}"
    assert jobs.recover_stuck_sends() == 0  # failed is final: nothing to hand over again
    client = signed_in(app, sender)
    page = client.get(f"/enrollments/{enrollment_id}").get_data(as_text=True)
    assert "the subject " in page and "send failed" in page
