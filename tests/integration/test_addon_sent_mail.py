"""Mail sent from Gmail or from Outlook (on an IMAP mailbox) with an add-on's link or pixel in it.

What a salesperson sees, through the real parts: the Gmail fake (google-api-python-client,
the format=full part tree) and Dovecot (a client's APPEND to Sent), the engine's real
sync, the ASGI front door for the pixel, the viewer for the document, the events
consumer, the Salesforce fake for Tasks, and the Live Feed's own query.

- a draft gets one tracking record, however often "Insert" is pressed;
- its sent copy is recognised in Sent: the real Message-ID is stored, a "sent" Task
  is owed once, and a reply to it is a reply Task on the prospect's Contact;
- its pixel and document views reach the feed worded "— sent from Gmail";
- with several recipients, views are the draft's ("A recipient"), and the reply's
  Task goes to whoever answered;
- a sent message with nothing of ours, or only another team's token, stores nothing.
"""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from config import Settings, get_settings
from core import redis as core_redis
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Document,
    DocumentPage,
    DocumentStatus,
    Event,
    ExternalDraft,
    Mailbox,
    SalesforceOutbox,
    SendStatus,
    SentMessage,
    Team,
    User,
    utcnow,
)
from tests.fakes.salesforce import FakeSalesforce
from tests.integration.provider_harness import (
    ExchangeHarness,
    GmailHarness,
    GraphHarness,
    ImapHarness,
)
from tests.integration.test_documents_viewer import beacon, open_viewer, started_ago
from tests.integration.test_tracking_edge import CHROME, call, run
from web.addons import service
from web.feed import feed_items
from web.tracking.app import SightlineAsgi
from worker import events
from worker.salesforce.outbox import flush_team
from worker.sync.engine import sync_mailbox

pytestmark = pytest.mark.integration


def make_team(name: str, user_email: str) -> tuple[int, int]:
    with session_scope() as session:
        team = Team(name=name, plan="team")
        session.add(team)
        session.flush()
        user = User(team_id=team.id, email=user_email, name="Rep")
        session.add(user)
        session.flush()
        return team.id, user.id


def add_mailbox(team_id: int, user_id: int, kind: str, email: str, creds: dict[str, Any]) -> int:
    with session_scope() as session:
        mailbox = Mailbox(
            team_id=team_id,
            user_id=user_id,
            kind=kind,
            email=email,
            credentials_encrypted=encrypt_json(creds),
            created_at=utcnow() - timedelta(minutes=5),
        )
        session.add(mailbox)
        session.flush()
        return mailbox.id


def add_document(team_id: int, name: str = "pricing.pdf") -> int:
    """A ready library document (its pages' text only: the viewer's first page is enough)."""
    with session_scope() as session:
        document = Document(
            team_id=team_id,
            name=name,
            kind="pdf",
            content_type="application/pdf",
            size_bytes=1000,
            sha256="0" * 64,
            status=DocumentStatus.READY,
            page_count=3,
        )
        session.add(document)
        session.flush()
        for number in (1, 2, 3):
            session.add(
                DocumentPage(document_id=document.id, number=number, width=800, height=1000)
            )
        return document.id


def insert(
    user_id: int,
    draft: str,
    to: list[str],
    document_id: int | None,
    source: service.Source = "gmail",
) -> service.DraftInsert:
    with session_scope() as session:
        return service.insert_for_draft(
            session,
            user_id,
            source=source,
            draft_ref=draft,
            recipients=service.Recipients(to=to),
            document_id=document_id,
            track_opens=True,
        )


def sent_mail(sender: str, to: list[str], subject: str, html: str) -> tuple[bytes, str]:
    """What Gmail files under SENT: plain and quoted-printable HTML parts, an attachment."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = subject
    message_id = make_msgid(domain="mail.gmail.test")
    message["Message-ID"] = message_id
    message.set_content("Hi Dana, the pricing is linked below.")
    body = f"<html><body><p>Hi Dana, {'the pricing is linked below. ' * 20}</p>{html}</body></html>"
    message.add_alternative(body, subtype="html", cte="quoted-printable")
    message.add_attachment(
        b"%PDF-1.4 not read" * 100, maintype="application", subtype="pdf", filename="terms.pdf"
    )
    return bytes(message), message_id


def reply_to(message_id: str, sender: str, to: str, subject: str) -> bytes:
    reply = EmailMessage()
    reply["From"] = sender
    reply["To"] = to
    reply["Subject"] = f"Re: {subject}"
    reply["Message-ID"] = make_msgid(domain="prospect.test")
    reply["In-Reply-To"] = message_id
    reply["References"] = message_id
    reply.set_content("Thanks, let's talk on Tuesday.\n")
    return bytes(reply)


def open_pixel(url: str) -> None:
    path = re.sub(r"^https?://[^/]+", "", url)

    async def scenario(app: SightlineAsgi) -> None:
        assert (await call(app, "GET", path, {"User-Agent": CHROME})).status == 200

    run(scenario)
    client = core_redis.get_redis()
    events.ensure_group(client)
    events.Consumer(client, "addon-test").step()


def feed_texts(team_id: int) -> list[str]:
    with session_scope() as session:
        return [i["text"] or "" for i in feed_items(session, team_id=team_id)]


def outbox(team_id: int) -> list[tuple[str, str]]:
    with session_scope() as session:
        rows = session.execute(
            select(SalesforceOutbox.kind, SalesforceOutbox.who_email)
            .where(SalesforceOutbox.team_id == team_id)
            .order_by(SalesforceOutbox.id)
        )
        return [(str(k), str(w)) for k, w in rows]


@pytest.fixture(autouse=True)
def no_scanner_window(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A draft's pixel is signed when it is inserted, and these tests open it seconds
    later: inside the default 10 s a hit is read as a mail gateway's scan."""
    monkeypatch.setenv("SIGHTLINE_TRACKING_SCANNER_SECONDS", "0")
    get_settings.cache_clear()


@pytest.fixture
def salesforce(
    fake_salesforce: FakeSalesforce, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> FakeSalesforce:
    fake_salesforce.reset()
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", fake_salesforce.instance_url)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", fake_salesforce.access_token)
    get_settings.cache_clear()
    return fake_salesforce


def test_gmail_sent_copy_is_recognised_its_reply_logged_and_its_views_worded_sent_from_gmail(
    env: Settings,
    fake_gmail: Any,
    salesforce: FakeSalesforce,
    app: Flask,
    client: FlaskClient,
) -> None:
    gmail = GmailHarness(fake_gmail)
    address = gmail.new_address()
    team_id, user_id = make_team("Sellers", address)
    other_team, other_user = make_team("Others", "rep@others.test")
    mailbox_id = add_mailbox(team_id, user_id, "gmail", address, gmail.credentials(address))
    add_mailbox(other_team, other_user, "imap", "rep@others.test", {})
    document_id = add_document(team_id)
    sync_mailbox(mailbox_id)  # the cursor: from now on, history

    first = insert(user_id, "r-1", ["Dana Scully <dana@prospect.test>"], document_id)
    again = insert(user_id, "r-1", ["dana@prospect.test"], document_id)
    assert (again.sent_message_id, again.link_url) == (first.sent_message_id, first.link_url)
    assert first.per_recipient and first.link_url and first.pixel_url
    foreign = insert(other_user, "o-1", ["dana@prospect.test"], None)

    raw, real_id = sent_mail(address, ["Dana Scully <dana@prospect.test>"], "Pricing", first.html)
    fake_gmail.add_message(address, raw, ["SENT"])
    # Nothing of ours, and only the other team's pixel: neither is stored or recognised.
    plain, _ = sent_mail(address, ["bob@elsewhere.test"], "Lunch", "<p>no links</p>")
    fake_gmail.add_message(address, plain, ["SENT"])
    pasted, pasted_id = sent_mail(address, ["eve@elsewhere.test"], "Fwd", foreign.html)
    fake_gmail.add_message(address, pasted, ["SENT"])
    stats = sync_mailbox(mailbox_id)
    assert stats.outcomes.get("sent_recognised") == 1
    assert stats.outcomes.get("sent_not_ours") == 2

    with session_scope() as session:
        sent = session.get_one(SentMessage, first.sent_message_id)
        assert (sent.status, sent.message_id, sent.origin) == ("sent", real_id, "gmail")
        assert sent.to_addrs == ["dana@prospect.test"] and sent.thread_id
        assert session.get_one(SentMessage, foreign.sent_message_id).status == SendStatus.DRAFT
        assert (
            session.scalar(
                select(func.count())
                .select_from(SentMessage)
                .where(SentMessage.message_id == pasted_id)
            )
            == 0
        )
        draft = session.scalars(select(ExternalDraft).where(ExternalDraft.draft_ref == "r-1")).one()
        assert draft.recognised_at is not None
    assert sync_mailbox(mailbox_id).outcomes.get("sent_recognised") is None  # nothing new

    # Dana answers: the reply matches the Gmail-sent message and owes a reply Task.
    gmail.deliver(address, reply_to(real_id, "dana@prospect.test", address, "Pricing"))
    assert sync_mailbox(mailbox_id).outcomes.get("recorded") == 1
    assert outbox(team_id) == [
        ("task_sent", "dana@prospect.test"),
        ("task_reply", "dana@prospect.test"),
    ]
    salesforce.add_contact("dana@prospect.test")
    flush_team(team_id)
    subjects = sorted(t["Subject"] for t in salesforce.tasks())
    assert subjects == ["Email: Pricing", "Reply: Re: Pricing"]

    # Dana opens the email and reads the document: the feed says where it was sent from.
    open_pixel(first.pixel_url)
    token = first.link_url.rsplit("/d/", 1)[1]
    response, visit = open_viewer(client, token)
    assert response.status_code == 200 and visit
    started_ago(visit, 60)
    assert beacon(client, token, visit, 2, {"1": 20000, "2": 15000}, final=True).status_code == 204
    texts = feed_texts(team_id)
    assert "Dana Scully opened the email — sent from Gmail" in texts
    assert any(
        t.startswith("Dana Scully read pricing.pdf — 2 of 3 pages")
        and t.endswith("— sent from Gmail")
        for t in texts
    ), texts
    assert "Sent to Dana Scully — sent from Gmail" in texts
    assert feed_texts(other_team) == []


@pytest.mark.parametrize(
    ("kind", "database_url"),
    [
        ("imap", "sqlite"),
        ("imap", "postgresql"),
        ("graph", "postgresql"),
        ("exchange", "postgresql"),
    ],
    indirect=["database_url"],
)
def test_outlook_sent_copy_to_several_people_is_the_drafts_and_the_replier_gets_the_task(
    kind: str, env: Settings, request: pytest.FixtureRequest
) -> None:
    """Outlook on an IMAP mailbox (Dovecot: the client's own APPEND to Sent), on
    Microsoft 365 (the Graph fake) or on Exchange Server (the EWS fake): Sent Items."""
    harness: Any = {
        "imap": lambda: ImapHarness(
            request.getfixturevalue("dovecot"), request.getfixturevalue("smtp_server")
        ),
        "graph": lambda: GraphHarness(request.getfixturevalue("fake_graph")),
        "exchange": lambda: ExchangeHarness(request.getfixturevalue("fake_ews")),
    }[kind]()
    address = harness.new_address()
    team_id, user_id = make_team("Sellers", address)
    mailbox_id = add_mailbox(team_id, user_id, kind, address, harness.credentials(address))
    document_id = add_document(team_id)
    sync_mailbox(mailbox_id)
    to = ["dana@prospect.test", "fox@prospect.test"]
    made = insert(user_id, "thread-9", to, document_id, "outlook")
    assert not made.per_recipient
    raw, real_id = sent_mail(address, to, "Pricing for both", made.html)
    harness.file_into(address, raw, "Sent" if kind == "imap" else "Sent Items")
    assert sync_mailbox(mailbox_id).outcomes.get("sent_recognised") == 1
    with session_scope() as session:
        sent = session.get_one(SentMessage, made.sent_message_id)
        assert (sent.message_id, sent.prospect_id, sent.to_addrs) == (real_id, None, to)

    open_pixel(made.pixel_url or "")
    assert "A recipient opened the email — sent from Outlook" in feed_texts(team_id)
    with session_scope() as session:  # a hit's recipient is a position, never a name
        opened = session.scalars(select(Event).where(Event.kind == "open")).one()
        opened.data = {**(opened.data or {}), "recipient": 1}
    assert "A recipient opened the email — sent from Outlook" in feed_texts(team_id)
    harness.deliver(address, reply_to(real_id, "fox@prospect.test", address, "P"))
    assert sync_mailbox(mailbox_id).outcomes.get("recorded") == 1
    assert outbox(team_id) == [
        ("task_sent", "dana@prospect.test"),
        ("task_reply", "fox@prospect.test"),
    ]
    with session_scope() as session:
        kinds = sorted(session.scalars(select(Event.kind).where(Event.team_id == team_id)))
    assert kinds == ["open", "reply", "sent"]
