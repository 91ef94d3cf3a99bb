"""Compose and send: a one-off email goes through the same claim and hand-over as a step.

The end-to-end test composes through the web form with the Flask test client,
runs the queued job with a real RQ worker (burst mode, in this process), and
reads what the real SMTP server delivered into the prospect's Dovecot INBOX:
placeholders filled, the pixel and click links on (or left out when tracking is
off for that email), a library document as the recipient's own tracked link, a
plain file as an ordinary attachment, the `sent` event and the Salesforce Task
owed. Other tests check the form's errors (named fields, kept files), scheduling
and cancelling (the claim and a cancel race on one conditional UPDATE).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import SimpleWorker
from sqlalchemy import func, select, update

from config import Settings, queues
from core.crypto import encrypt_json
from core.db import session_scope
from core.events import natural_key, record_event
from core.models import (
    Event,
    Mailbox,
    MessageDocument,
    OneOffAttachment,
    OneOffEmail,
    Prospect,
    SalesforceOutbox,
    SentMessage,
    Team,
    User,
    utcnow,
)
from core.redis import get_redis
from tests.conftest import create_user
from tests.fixtures.documents import samples
from tests.integration.test_app_pages import csrf, signed_in
from tests.integration.test_feed import PASSWORD
from tests.services.dovecot import DovecotServer, has_message_id
from worker.documents.jobs import process_document_job
from worker.queueing import get_queue
from worker.sequences import oneoff

pytestmark = pytest.mark.integration


def server(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    return {"host": host, "port": port, "username": user, "password": password, "security": "none"}


def add_mailbox(email: str, credentials: dict[str, Any] | None = None) -> int:
    with session_scope() as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        mailbox = Mailbox(
            team_id=user.team_id,
            user_id=user.id,
            kind="imap",
            email=email,
            credentials_encrypted=encrypt_json(credentials or {}),
        )
        session.add(mailbox)
        session.flush()
        return mailbox.id


def run_send_jobs() -> None:
    """What a `worker` process does with the send queue, here and now."""
    SimpleWorker([get_queue(queues.SEND)], connection=get_redis()).work(burst=True)


def compose(client: FlaskClient, **fields: Any) -> Any:
    data = {"csrf_token": csrf(client, "/emails/new"), "when": "now", "tracked": "1", **fields}
    return client.post("/emails/new", data=data, content_type="multipart/form-data")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_composed_email_is_delivered_tracked_with_content_and_a_plain_file(
    env: Settings,
    app: Flask,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> None:
    sender, prospect, colleague = (
        unique_address(prefix="rep"),
        unique_address(),
        unique_address(prefix="cc"),
    )
    token = create_user(
        app, sender, "Sellers", "--password", PASSWORD, "--plan", "team", "--name", "Riley Rep"
    )
    api = app.test_client()
    uploaded = api.post(
        "/api/v1/documents",
        data={"file": (io.BytesIO(samples.pdf_bytes(2, title="Pricing")), "pricing.pdf")},
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
    )
    document_id = uploaded.get_json()["id"]
    assert process_document_job(document_id) == "ready"
    mailbox_id = add_mailbox(
        sender,
        {
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
            "folders": ["INBOX"],
            "append_to_sent": False,
        },
    )
    client = signed_in(app, sender)
    csv_bytes = b"email,name\nx@y.test,X\n"
    response = compose(
        client,
        mailbox_id=str(mailbox_id),
        to=f"Dana Scully <{prospect}>",
        cc=colleague,
        subject="Pricing for {{first_name}}",
        body_html=(
            "<p>Hi {{first_name}}, the plan for {{company|your team}}: "
            '<a href="https://acme.test/plans">plans</a>.</p><p>{{sender_first_name}}</p>'
        ),
        documents=str(document_id),
        attachments=(io.BytesIO(csv_bytes), "prospects.csv"),
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    email_id = int(response.headers["Location"].rsplit("/", 1)[1])
    run_send_jobs()

    with session_scope() as session:
        sent = session.scalars(select(SentMessage)).one()
        assert (sent.status, sent.enrollment_id, sent.to_addrs, sent.cc_addrs) == (
            "sent",
            None,
            [prospect],
            [colleague],
        )
        dana = session.get_one(Prospect, sent.prospect_id)
        assert (dana.email, dana.name) == (prospect, "Dana Scully")
        assert session.get_one(OneOffEmail, email_id).sent_message_id == sent.id
        assert session.scalar(select(Event.kind).where(Event.sent_message_id == sent.id)) == "sent"
        task = session.scalars(select(SalesforceOutbox)).one()
        assert (task.kind, task.who_email) == ("task_sent", prospect)
        assert "Pricing for Dana" in task.payload["subject"]
        assert "/o/" not in task.payload["description"]  # the kept copy carries no tracking
        message_id, sent_id, sent_team = sent.message_id, sent.id, sent.team_id

    message = dovecot.wait_for_message(prospect, has_message_id(message_id))
    assert message["Subject"] == "Pricing for Dana"
    assert colleague in message["Cc"]
    html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html = html_part.get_content()
    assert "Hi Dana, the plan for your team" in html and "<p>Riley</p>" in html
    assert re.search(r'src="http://localhost:5000/o/[^"]+\.gif"', html)
    assert re.search(r'href="http://localhost:5000/c/[^"]+"', html)
    assert re.search(
        r'<a href="http://localhost:5000/d/[^"]+" data-sightline-untracked>pricing\.pdf', html
    )
    assert "https://acme.test/plans" in text_part.get_content()
    files = list(message.iter_attachments())
    assert [(p.get_filename(), p.get_content()) for p in files] == [
        ("prospects.csv", csv_bytes.decode())
    ]

    # The sent list and the email's page show it, with each recipient.
    listing = client.get("/emails").get_data(as_text=True)
    assert f'data-recipient="{prospect}" data-state="sent"' in listing
    assert f'data-recipient="{colleague}" data-state="sent"' in listing
    page = client.get(f"/emails/{email_id}").get_data(as_text=True)
    assert 'data-status="sent"' in page
    # Opened: one message went to both, so the open is the email's, not pinned on Dana.
    with session_scope() as session:
        record_event(
            session,
            team_id=sent_team,
            key=natural_key("open", sent_id, 0, 1, "counted"),
            kind="open",
            sent_message_id=sent_id,
            data={"recipient": 0, "hit_class": "person"},
        )
    listing = client.get("/emails").get_data(as_text=True)
    assert 'data-shared="opened"' in listing
    assert f'data-recipient="{prospect}" data-state="sent"' in listing

    # The document's seconds per page are on the reports page (team plan).
    reports = client.get("/reports").get_data(as_text=True)
    assert 'aria-label="Seconds per page of pricing.pdf"' in reports
    # A sequence step can carry the same document from the library.
    created = client.post(
        "/sequences/new",
        data={"csrf_token": csrf(client), "name": "Deck", "mailbox_id": str(mailbox_id)},
    )
    sequence_id = int(re.findall(r"/sequences/(\d+)", created.headers["Location"])[0])
    step = client.post(
        f"/sequences/{sequence_id}/steps/new",
        data={
            "csrf_token": csrf(client),
            "delay": "0",
            "unit": "minutes",
            "subject": "The deck",
            "body_html": "<p>Here it is.</p>",
            "documents": str(document_id),
        },
    )
    assert step.status_code == 302, step.get_data(as_text=True)
    with session_scope() as session:
        attached = session.execute(
            select(MessageDocument.document_id, MessageDocument.tracked).where(
                MessageDocument.step_id.is_not(None)
            )
        ).all()
        assert [tuple(a) for a in attached] == [(document_id, True)]

    # The same again with tracking off for this email: untouched HTML.
    response = compose(
        client,
        mailbox_id=str(mailbox_id),
        to=prospect,
        subject="Personal note",
        body_html='<p>See <a href="https://acme.test/">this</a></p>',
        tracked="",
    )
    assert response.status_code == 302
    run_send_jobs()
    with session_scope() as session:
        second = session.scalars(
            select(SentMessage).where(SentMessage.subject == "Personal note")
        ).one()
    personal = dovecot.wait_for_message(prospect, has_message_id(second.message_id))
    body = personal.get_body(("html",))
    assert body is not None
    assert "/o/" not in body.get_content() and 'href="https://acme.test/"' in body.get_content()


def test_form_errors_name_the_field_keep_every_value_and_the_files(
    app: Flask, env: Settings
) -> None:
    create_user(app, "rep@s.test", "S", "--password", PASSWORD)
    mailbox_id = add_mailbox("rep@s.test")
    client = signed_in(app, "rep@s.test")
    response = compose(
        client,
        mailbox_id=str(mailbox_id),
        to="dana@acme.test, not-an-address",
        subject="Hi {{company}}",
        body_html="<p>Hello {{first_name}}</p>",
        when="later",
        send_at="2001-01-01T09:00",
        tz_offset="0",
        attachments=(io.BytesIO(b"%PDF-1.4 tiny"), "terms.pdf"),
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "There are 2 problems" in page
    assert "To: “not-an-address” is not a valid email address." in page
    assert "Send at: choose a time in the future" in page
    assert re.search(
        r'id="f-to"[^>]*aria-describedby="f-to-hint f-to-error"'
        r'[^>]*aria-invalid="true"[^>]* autofocus',
        page,
    )
    assert 'value="dana@acme.test, not-an-address"' in page  # nothing typed is lost
    kept = re.search(r'name="kept" value="([^"]+)" checked> terms.pdf', page)
    assert kept is not None, "the chosen file is kept for the next try"

    # Fixed, but the new recipient has no company and no name: the values are missing.
    later = (utcnow() + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    response = compose(
        client,
        mailbox_id=str(mailbox_id),
        to="dana@acme.test",
        subject="Hi {{company}}",
        body_html="<p>Hello {{first_name}}</p>",
        when="later",
        send_at=later,
        tz_offset="-120",
        kept=kept.group(1),
    )
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Subject: {{company}} has no value for dana@acme.test" in page
    assert "Body: {{first_name}} has no value for dana@acme.test" in page
    assert '<mark class="missing-value">[first_name missing]</mark>' in page.replace(
        "&lt;", "<"
    ).replace("&gt;", ">").replace("&#34;", '"').replace("&quot;", '"')

    # With fallbacks it is accepted, scheduled in UTC, the kept file attached.
    response = compose(
        client,
        mailbox_id=str(mailbox_id),
        to="dana@acme.test",
        subject="Hi {{company|there}}",
        body_html="<p>Hello {{first_name|friend}}</p>",
        when="later",
        send_at=later,
        tz_offset="-120",
        kept=kept.group(1),
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    with session_scope() as session:
        email = session.scalars(select(OneOffEmail)).one()
        assert (email.subject, email.body_html, email.status) == (
            "Hi there",
            "<p>Hello friend</p>",
            "scheduled",
        )
        assert email.send_at.strftime("%Y-%m-%dT%H:%M") == (
            (utcnow() + timedelta(days=2) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
        )
        files = session.scalars(select(OneOffAttachment)).all()
        assert [(f.filename, f.data) for f in files] == [("terms.pdf", b"%PDF-1.4 tiny")]


def test_library_content_needs_the_team_plan_and_tracking(app: Flask, env: Settings) -> None:
    create_user(app, "rep@s.test", "S", "--password", PASSWORD)
    mailbox_id = add_mailbox("rep@s.test")
    client = signed_in(app, "rep@s.test")
    page = client.get("/emails/new").get_data(as_text=True)
    assert "Trackable content is part of the Team plan" in page
    response = compose(
        client,
        mailbox_id=str(mailbox_id),
        to="dana@acme.test",
        subject="x",
        body_html="<p>x</p>",
        documents="1",
    )
    assert response.status_code == 422
    assert "Content: choose documents from your library that are ready." in response.get_data(
        as_text=True
    )


def test_a_scheduled_email_waits_for_its_time_and_a_cancel_races_the_claim_cleanly(
    app: Flask, env: Settings
) -> None:
    create_user(app, "rep@s.test", "S", "--password", PASSWORD)
    mailbox_id = add_mailbox("rep@s.test")
    now = utcnow()
    with session_scope() as session:
        team_id = session.scalars(select(Team.id)).one()
        emails = []
        for subject in ("later", "cancelled", "due"):
            email = OneOffEmail(
                team_id=team_id,
                mailbox_id=mailbox_id,
                to_addrs=["dana@acme.test"],
                cc_addrs=[],
                subject=subject,
                body_html="<p>x</p>",
                send_at=now + timedelta(hours=1),
            )
            session.add(email)
            session.flush()
            emails.append(email.id)
    later, cancelled, due = emails
    with session_scope() as session:
        assert oneoff.claim_one_off(session, later, now) is None  # not yet
        assert oneoff.cancel(session, cancelled, team_id, now)
        assert not oneoff.cancel(session, cancelled, team_id + 1, now)  # not another team's
        session.execute(
            update(OneOffEmail)
            .where(OneOffEmail.id == due)
            .values(send_at=now - timedelta(seconds=1))
        )
    assert oneoff.enqueue_due_one_offs() == 1
    assert oneoff.enqueue_due_one_offs() == 0  # one waiting job per email
    with session_scope() as session:
        sent = oneoff.claim_one_off(session, due, utcnow())
        assert sent is not None and sent.status == "sending" and sent.enrollment_id is None
    with session_scope() as session:
        assert oneoff.claim_one_off(session, due, utcnow()) is None  # claimed once
        assert not oneoff.cancel(session, due, team_id, utcnow())  # too late to cancel
        assert oneoff.claim_one_off(session, cancelled, now + timedelta(days=1)) is None
        assert session.scalar(select(func.count()).select_from(SentMessage)) == 1
    client = signed_in(app, "rep@s.test")
    response = client.post(f"/emails/{later}/cancel", data={"csrf_token": csrf(client)})
    assert response.status_code == 302
    assert "Cancelled: this email will not be sent." in client.get(f"/emails/{later}").get_data(
        as_text=True
    )
    response = client.post(f"/emails/{due}/cancel", data={"csrf_token": csrf(client)})
    assert "Too late to cancel" in client.get(response.headers["Location"]).get_data(as_text=True)
