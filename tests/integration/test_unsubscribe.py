"""One-click unsubscribe (RFC 8058), end to end on real parts.

A sequence step goes out through the real SMTP server into the prospect's
Dovecot INBOX; its List-Unsubscribe header (read back from Dovecot) holds the
https link and the mailto, List-Unsubscribe-Post says one-click, and the
``{{unsubscribe_link}}`` in the body is the same link, untouched by click
tracking. The link's GET page changes nothing; the mail client's one-click POST
opts the address out (every live enrolment ends ``opted_out``), once however
often it comes; enrolling the address again is refused with the reason and
the date. A message to the mailto, with no threading headers, is read by the
real sync as the same request. Forged and mangled tokens are refused with a page.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Enrollment,
    Mailbox,
    OptOutChange,
    Prospect,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    utcnow,
)
from core.tracking.tokens import open_token, unsubscribe_token
from tests.conftest import TEST_SECRET_KEY, create_user
from tests.security.test_key_rotation import NEW_SECRET_KEY, reconfigure
from tests.services.dovecot import DovecotServer
from worker.sequences import enrolling, messages
from worker.sequences.claiming import claim_due_step
from worker.sequences.jobs import send_due_step
from worker.sync.engine import sync_mailbox

pytestmark = pytest.mark.integration

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def server(host: str, port: int, user: str, password: str) -> dict[str, Any]:
    return {"host": host, "port": port, "username": user, "password": password, "security": "none"}


class Seller:
    """A team with an IMAP mailbox on Dovecot (connected through the API) and a two-step
    sequence."""

    def __init__(
        self, app: Flask, client: FlaskClient, dovecot: DovecotServer, smtp: Any, sender: str
    ) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {create_user(app, sender, 'Sellers')}"}
        self.sender = sender
        mailbox = self.post(
            "/api/v1/mailboxes",
            {
                "kind": "imap",
                "email": sender,
                "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
                "smtp": server(smtp.host, smtp.port, sender, smtp.password),
            },
        )
        self.mailbox_id = mailbox["id"]
        with session_scope() as session:  # the model's defaults: no send window to wait for
            team_id = session.get_one(Mailbox, self.mailbox_id).team_id
            sequence = Sequence(team_id=team_id, mailbox_id=self.mailbox_id, name="Intro")
            sequence.steps = [
                SequenceStep(
                    position=0,
                    delay_seconds=0,
                    subject="Hello {{first_name}}",
                    body_html=(
                        '<p>Hi {{first_name}}, see <a href="https://acme.test/p">this</a>.</p>'
                        '<p><a href="{{unsubscribe_link}}">Unsubscribe</a></p>'
                    ),
                ),
                SequenceStep(position=1, delay_seconds=3600, subject="Again", body_html="<p>B</p>"),
            ]
            session.add(sequence)
            session.flush()
            self.sequence_id = sequence.id

    def post(self, path: str, body: Any) -> Any:
        response = self.client.post(path, json=body, headers=self.headers)
        assert response.status_code in (200, 201), response.json
        return response.json

    def enrol(self, email: str) -> Any:
        return self.client.post(
            "/api/v1/enrollments",
            json={"sequence_id": self.sequence_id, "email": email, "name": "Dana Smith"},
            headers=self.headers,
        )


def state(enrollment_id: int) -> str:
    with session_scope() as session:
        return str(session.get_one(Enrollment, enrollment_id).state)


def opted_out(email: str) -> tuple[bool, str | None, int]:
    """(on the list, the reason, how many changes were recorded)."""
    with session_scope() as session:
        prospect = session.scalars(select(Prospect).where(Prospect.email == email)).one()
        recorded = session.scalar(
            select(func.count())
            .select_from(OptOutChange)
            .where(OptOutChange.prospect_id == prospect.id)
        )
        return prospect.opted_out_at is not None, prospect.opted_out_reason, int(recorded or 0)


def links(message: EmailMessage) -> tuple[str, str]:
    """(the https URI, the mailto URI) of the delivered List-Unsubscribe header."""
    found = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    assert len(found) == 2, message["List-Unsubscribe"]
    return found[0], found[1]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_delivered_step_unsubscribes_in_one_click_and_enrolling_again_is_refused(
    env: Settings,
    app: Flask,
    client: FlaskClient,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> None:
    seller = Seller(app, client, dovecot, smtp_server, unique_address("seller.test", "rep"))
    prospect = unique_address()
    enrollment_id = seller.enrol(prospect).json["id"]
    assert send_due_step(enrollment_id, 0) == "sent"

    message = dovecot.wait_for_message(prospect, lambda m: m["Subject"] == "Hello Dana")
    raw_header = re.search(
        rb"^List-Unsubscribe:.*?\r\n(?! )", dovecot.messages(prospect)[-1], re.S | re.M
    )
    assert raw_header is not None and b"=?" not in raw_header.group(0)  # no encoded words
    https, mailto = links(message)
    assert https.startswith(f"{env.public_base_url}/u/")
    assert mailto == f"mailto:{seller.sender}?subject=unsubscribe"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    assert f'href="{https}"' in html_part.get_content()  # the placeholder, not a tracked /c/ link
    assert "/c/" in html_part.get_content()  # while the other link is tracked
    assert https in text_part.get_content()
    path = https.removeprefix(env.public_base_url)

    page = client.get(path)
    assert page.status_code == 200
    assert prospect in page.get_data(as_text=True) and "<button" in page.get_data(as_text=True)
    assert "Set-Cookie" not in page.headers
    assert state(enrollment_id) == "active"  # a link scanner's GET unsubscribes nobody
    assert opted_out(prospect) == (False, None, 0)

    for _ in range(2):  # a mail client may retry: the second POST changes nothing
        answer = client.post(path, data=ONE_CLICK)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert "Set-Cookie" not in answer.headers
    assert state(enrollment_id) == "opted_out"
    listed, reason, changes = opted_out(prospect)
    assert listed and changes == 1
    assert reason == "unsubscribed with their mail client (one-click)"
    assert send_due_step(enrollment_id, 1) != "sent"

    refused = seller.enrol(prospect)
    assert refused.status_code == 422
    assert refused.json["error"]["message"] == (
        f"{prospect} is on the opt-out list since {utcnow():%Y-%m-%d}: "
        "unsubscribed with their mail client (one-click)"
    )

    # The mailto: a client's message with that subject and no threading headers at all.
    other = unique_address()
    other_enrollment = seller.enrol(other).json["id"]
    assert send_due_step(other_enrollment, 0) == "sent"
    dovecot.deliver(
        seller.sender,
        (
            f"From: {other}\r\nTo: {seller.sender}\r\nSubject: unsubscribe\r\n"
            f"Message-ID: <mailto-{other}>\r\nDate: Sun, 06 Dec 2026 12:00:00 +0000\r\n\r\n"
        ).encode(),
        mail_from=other,
    )
    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert state(other_enrollment) == "opted_out"
    assert opted_out(other)[0]


def world(app: Flask) -> tuple[int, int, str]:
    """A team, a mailbox and a sequence with one live enrolment: (team, enrolment, address)."""
    create_user(app, "rep@seller.test", "Sellers")
    with session_scope() as session:
        team = session.scalars(select(Team).where(Team.name == "Sellers")).one()
        mailbox = Mailbox(
            team_id=team.id,
            kind="imap",
            email="rep@seller.test",
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Intro")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="<p>Hi</p>")
        ]
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session, sequence=sequence, email="Dana@Acme.test", name=None, now=utcnow()
        )
        session.flush()
        return team.id, enrollment.id, "dana@acme.test"


def test_the_confirm_page_button_unsubscribes_and_a_bare_post_does_not(
    app: Flask, client: FlaskClient
) -> None:
    team_id, enrollment_id, email = world(app)
    path = f"/u/{unsubscribe_token(team_id, email)}"
    page = client.get(path).get_data(as_text=True)
    confirm = re.search(r'name="confirm" value="([^"]+)"', page)
    assert confirm is not None

    for stray in ({}, {"List-Unsubscribe": "yes"}, {"confirm": "made-up"}):
        refused = client.post(path, data=stray)
        assert refused.status_code == 400
        assert "Nothing was changed" in refused.get_data(as_text=True)
    assert state(enrollment_id) == "active"

    done = client.post(path, data={"confirm": confirm.group(1)})
    assert done.status_code == 200
    assert "will get no more emails" in done.get_data(as_text=True)
    assert state(enrollment_id) == "opted_out"
    assert opted_out(email) == (True, "unsubscribed with the link in an email", 1)
    assert "already unsubscribed" in client.get(path).get_data(as_text=True)


def test_forged_and_mangled_tokens_are_refused_in_plain_words(
    app: Flask, client: FlaskClient
) -> None:
    team_id, enrollment_id, email = world(app)
    good = unsubscribe_token(team_id, email)
    forged = [
        good[:-3] + ("aaa" if not good.endswith("aaa") else "bbb"),  # signature changed
        good[:20],  # cut short
        open_token(1, team_id, 0, 0),  # ours, but for another purpose
        unsubscribe_token(team_id + 1000, email),  # a team that does not exist
        "not-a-token",
    ]
    for token in forged:
        for response in (client.get(f"/u/{token}"), client.post(f"/u/{token}", data=ONE_CLICK)):
            assert response.status_code == 404, token
            assert "This unsubscribe link is not valid" in response.get_data(as_text=True)
    assert state(enrollment_id) == "active"
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(OptOutChange)) == 0


def test_the_link_hides_the_address_and_outlives_a_secret_key_rotation(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    team_id, enrollment_id, email = world(app)
    token = unsubscribe_token(team_id, email)
    # URLs end up in routers' logs: the address is not readable in it, even decoded.
    decoded = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert email not in token and email.encode() not in decoded

    reconfigure(monkeypatch, SECRET_KEY=NEW_SECRET_KEY, SECRET_KEY_FALLBACKS=TEST_SECRET_KEY)
    assert client.get(f"/u/{token}").status_code == 200  # an old email's link still works
    reconfigure(monkeypatch, SECRET_KEY=NEW_SECRET_KEY, SECRET_KEY_FALLBACKS=None)
    assert client.post(f"/u/{token}", data=ONE_CLICK).status_code == 404
    assert state(enrollment_id) == "active"


def test_headers_follow_the_team_setting_and_never_go_on_one_off_emails(
    app: Flask, client: FlaskClient
) -> None:
    team_id, enrollment_id, email = world(app)
    with session_scope() as session:
        sent = enrolling_claim(session, enrollment_id)
        mailbox = session.get_one(Mailbox, sent.mailbox_id)
        built = messages.outgoing_message(session, sent, mailbox, tracked=True)
        assert built.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert built.extra_headers["List-Unsubscribe"] == (
            f"<http://localhost:5000/u/{unsubscribe_token(team_id, email)}>, "
            "<mailto:rep@seller.test?subject=unsubscribe>"
        )
        one_off = SentMessage(
            team_id=team_id,
            mailbox_id=mailbox.id,
            prospect_id=sent.prospect_id,
            message_id="<one-off@seller.test>",
            subject="A note",
            to_addrs=[email],
            cc_addrs=[],
            status="sending",
        )
        session.add(one_off)
        session.flush()
        assert messages.outgoing_message(session, one_off, mailbox).extra_headers == {}
        session.execute(update(Team).values(unsubscribe_headers=False))
        assert messages.outgoing_message(session, sent, mailbox).extra_headers == {}


def enrolling_claim(session: Any, enrollment_id: int) -> SentMessage:
    sent = claim_due_step(session, enrollment_id, utcnow() + timedelta(seconds=1))
    assert sent is not None
    session.flush()
    return sent
