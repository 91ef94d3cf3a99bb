"""A document in a sequence step, all the way into the prospect's real inbox.

Real SMTP server, real Dovecot: the tracked document arrives as a link to this
recipient's own viewer URL (left alone by click tracking), the plain one as an
ordinary MIME attachment with the original bytes (a PDF with a script and a
submit button as the copy without them), and a retried hand-over writes the
same link.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pymupdf
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from config import Settings
from core.db import session_scope
from core.documents.tokens import read_link_token
from core.models import DocumentLink, Mailbox, SentMessage
from tests.conftest import create_user
from tests.fixtures.documents import active, samples
from tests.services.dovecot import DovecotServer
from worker.documents.jobs import process_document_job
from worker.documents.pdf_active import find_active_content
from worker.sequences import messages
from worker.sequences.jobs import send_due_step

ANY_TIME = {
    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
    "start": "00:00",
    "end": "24:00",
}

pytestmark = pytest.mark.integration


def js(response: Any) -> Any:
    """A response's JSON body (typed loosely: tests index into it)."""
    return response.get_json()


def server(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    return {"host": host, "port": port, "username": user, "password": password, "security": "none"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_step_documents_arrive_as_a_tracked_link_and_a_plain_attachment(
    env: Settings,
    app: Flask,
    client: FlaskClient,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> None:
    headers = {"Authorization": f"Bearer {create_user(app, 'rep@s.test', 'S', '--plan', 'team')}"}
    sender, prospect = unique_address(prefix="rep"), unique_address()

    def post(path: str, body: Any, method: str = "post") -> Any:
        response = getattr(client, method)(path, json=body, headers=headers)
        assert response.status_code in (200, 201), response.json
        return response.json

    pricing, terms = samples.pdf_bytes(2, title="Pricing"), samples.pdf_bytes(1, title="Terms")
    form = active.with_feature("submit_form_button")
    ids = []
    for data, name in ((pricing, "pricing.pdf"), (terms, "terms.pdf"), (form, "form.pdf")):
        uploaded = client.post(
            "/api/v1/documents",
            data={"file": (io.BytesIO(data), name)},
            headers=headers,
            content_type="multipart/form-data",
        )
        ids.append(js(uploaded)["id"])
        assert process_document_job(js(uploaded)["id"]) == "ready"
    mailbox = post(
        "/api/v1/mailboxes",
        {
            "kind": "imap",
            "email": sender,
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
        },
    )
    sequence = post(
        "/api/v1/sequences",
        {
            "name": "Intro",
            "mailbox_id": mailbox["id"],
            # About what is sent, not when: any day, any hour (the default is Mon-Fri 08-18).
            "send_window": ANY_TIME,
            "steps": [
                {
                    "delay_seconds": 0,
                    "subject": "Our pricing",
                    "body_html": '<p>Hi, see <a href="https://example.com/about">us</a>.</p>',
                }
            ],
        },
    )
    attached = post(
        f"/api/v1/sequences/{sequence['id']}/steps/0/documents",
        {
            "documents": [
                {"document_id": ids[0], "tracked": True},
                {"document_id": ids[1], "tracked": False},
                {"document_id": ids[2], "tracked": False},
            ]
        },
        method="put",
    )
    assert [(d["name"], d["tracked"]) for d in attached["documents"]] == [
        ("pricing.pdf", True),
        ("terms.pdf", False),
        ("form.pdf", False),
    ]
    enrollment = post(
        "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": prospect, "name": "Dana"}
    )
    assert send_due_step(enrollment["id"], 0) == "sent"

    message = dovecot.wait_for_message(prospect, lambda m: m["Subject"] == "Our pricing")
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html = html_part.get_content()
    links = re.findall(r'<a href="(http://localhost:5000/d/[^"]+)" data-sightline-untracked>', html)
    assert len(links) == 1
    token = links[0].rsplit("/", 1)[1]
    ref = read_link_token(token)
    assert ref is not None and ref.document_id == ids[0] and ref.recipient == 0
    assert links[0] in text_part.get_content()
    assert "/c/" in html  # the ordinary link is click-tracked; the document link is not
    files = [p for p in message.iter_attachments()]
    assert [(p.get_filename(), p.get_content_type()) for p in files] == [
        ("terms.pdf", "application/pdf"),
        ("form.pdf", "application/pdf"),
    ]
    assert files[0].get_content() == terms
    # A PDF with a script and a submit button goes out as the copy without them.
    with pymupdf.open(stream=files[1].get_content(), filetype="pdf") as sent_form:
        assert find_active_content(sent_form) == []
        assert sent_form.page_count == 2

    # The same hand-over again (a retry) makes no second link and the same URL.
    with session_scope() as session:
        sent = session.scalars(select(SentMessage)).one()
        mailbox_row = session.get_one(Mailbox, sent.mailbox_id)
        again = messages.outgoing_message(session, sent, mailbox_row, tracked=True)
        assert links[0] in again.html
        assert session.scalar(select(func.count()).select_from(DocumentLink)) == 1
        # The copy kept for Salesforce names the document but carries no link.
        described = messages.outgoing_message(session, sent, mailbox_row)
        assert "[pricing.pdf]" in described.html and "/d/" not in described.html
        assert described.attachments == []
