"""Mailbox sync against Dovecot: only matches are fetched, nothing twice, nothing stops it."""

from __future__ import annotations

import time
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pytest
from sqlalchemy import func, select, update

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Enrollment,
    Event,
    InboundMessage,
    Mailbox,
    MailboxStatus,
    SendStatus,
    Sequence,
    SequenceStep,
    Team,
    utcnow,
)
from tests.services.dovecot import DovecotServer, unique_address
from worker.sequences import claiming, enrolling
from worker.sync.engine import sync_mailbox


@pytest.fixture
def setup(env: Settings, dovecot: DovecotServer, smtp_server: Any) -> dict[str, Any]:
    """A mailbox on Dovecot with one sent step to Dana."""
    sender = unique_address("seller.test", "rep")
    now = utcnow()
    creds = {
        "imap": {
            "host": dovecot.host,
            "port": dovecot.imap_port,
            "username": sender,
            "password": dovecot.password,
            "security": "none",
        },
        "smtp": {
            "host": smtp_server.host,
            "port": smtp_server.port,
            "username": sender,
            "password": smtp_server.password,
            "security": "none",
        },
        "folders": ["INBOX", "Replies"],
    }
    with dovecot.imap(sender) as client:
        client.create_folder("Replies")
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id,
            kind="imap",
            email=sender,
            credentials_encrypted=encrypt_json(creds),
            created_at=now,
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Intro")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="<p>Hi</p>"),
            SequenceStep(position=1, delay_seconds=60, subject="Again", body_html="<p>Again</p>"),
        ]
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session,
            sequence=sequence,
            email="dana@acme.test",
            name="Dana",
            now=now - timedelta(seconds=1),
        )
        session.flush()
        sent = claiming.claim_due_step(session, enrollment.id, now)
        assert sent is not None
        sent.status = SendStatus.SENT
        sent.sent_at = now
        return {
            "mailbox_id": mailbox.id,
            "sender": sender,
            "message_id": sent.message_id,
            "enrollment_id": enrollment.id,
        }


def message(
    author: str,
    to: str,
    in_reply_to: str | None,
    body: str = "Sounds good.\n",
    subject: str = "Re: Hi",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="acme.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    msg.set_content(body)
    return msg.as_bytes()


def events() -> dict[str, int]:
    with session_scope() as session:
        rows = session.execute(select(Event.kind, func.count()).group_by(Event.kind))
        return {kind: int(n) for kind, n in rows}


def test_unrelated_mail_is_listed_but_never_fetched(
    setup: dict[str, Any], dovecot: DovecotServer
) -> None:
    for n in range(5):
        dovecot.deliver(
            setup["sender"],
            message(f"news{n}@shop.test", setup["sender"], None, subject=f"Weekly deals {n}"),
        )
    dovecot.deliver(
        setup["sender"], message("dana@acme.test", setup["sender"], setup["message_id"])
    )
    stats = sync_mailbox(setup["mailbox_id"])
    assert stats.listed == 6
    assert stats.fetched == 1
    assert stats.outcomes == {"recorded": 1}
    assert events() == {"reply": 1}


def test_syncing_again_or_after_a_uidvalidity_change_records_nothing_twice(
    setup: dict[str, Any], dovecot: DovecotServer
) -> None:
    raw = message("boss@acme.test", setup["sender"], setup["message_id"])
    with dovecot.imap(setup["sender"]) as client:
        client.append("Replies", raw)
    sync_mailbox(setup["mailbox_id"])
    assert sync_mailbox(setup["mailbox_id"]).listed == 0  # the cursor moved on
    with session_scope() as session:  # forget the cursor: a full re-list
        session.execute(update(Mailbox).values(sync_cursor=None))
    again = sync_mailbox(setup["mailbox_id"])
    assert again.outcomes == {"duplicate": 1}
    with dovecot.imap(setup["sender"]) as client:  # the server renumbers the folder
        client.delete_folder("Replies")
        time.sleep(1.1)
        client.create_folder("Replies")
        client.append("Replies", raw)
    rebuilt = sync_mailbox(setup["mailbox_id"])
    assert rebuilt.outcomes == {"duplicate": 1}
    assert events() == {"reply": 1}
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(InboundMessage)) == 1


def test_malformed_messages_never_stop_the_sync(
    setup: dict[str, Any], dovecot: DovecotServer
) -> None:
    ours = setup["message_id"]
    garbage = [
        b"From: x@acme.test\r\nIn-Reply-To: " + ours.encode() + b"\r\nContent-Type: multipart/"
        b'mixed; boundary="nope"\r\n\r\n--nope\r\nContent-Type: text/plain; charset=x-unknown'
        b"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
        b"In-Reply-To: " + ours.encode() + b"\r\nSubject: =?utf-8?B?####?=\r\n\r\n\xff\xfe\x00",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\n\x00\x01\x02",
    ]
    for raw in garbage:
        dovecot.deliver(setup["sender"], raw)
    dovecot.deliver(
        setup["sender"], message("dana@acme.test", setup["sender"], ours, body="Yes please.\n")
    )
    stats = sync_mailbox(setup["mailbox_id"])
    assert stats.listed == 4
    with session_scope() as session:
        enrollment = session.get_one(Enrollment, setup["enrollment_id"])
        assert enrollment.state == "replied"
        statuses = {row.kind for row in session.scalars(select(InboundMessage))}
    assert "reply" in statuses


def test_a_reply_by_the_mailbox_owner_is_not_a_reply(
    setup: dict[str, Any], dovecot: DovecotServer
) -> None:
    dovecot.deliver(
        setup["sender"],
        message(setup["sender"], "dana@acme.test", setup["message_id"], body="Following up.\n"),
    )
    stats = sync_mailbox(setup["mailbox_id"])
    assert stats.outcomes == {"own": 1}
    with session_scope() as session:
        assert session.get_one(Enrollment, setup["enrollment_id"]).state == "active"


def test_refused_credentials_mark_only_that_mailbox(
    setup: dict[str, Any], dovecot: DovecotServer
) -> None:
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, setup["mailbox_id"])
        other = Mailbox(
            team_id=mailbox.team_id,
            kind="imap",
            email="other@seller.test",
            credentials_encrypted=mailbox.credentials_encrypted,
        )
        session.add(other)
        creds = {
            "imap": {
                "host": dovecot.host,
                "port": dovecot.imap_port,
                "username": setup["sender"],
                "password": "revoked",
                "security": "none",
            },
            "smtp": {
                "host": "127.0.0.1",
                "port": 1,
                "username": "x",
                "password": "y",
                "security": "none",
            },
        }
        mailbox.credentials_encrypted = encrypt_json(creds)
    sync_mailbox(setup["mailbox_id"])
    with session_scope() as session:
        statuses = {e: s for e, s in session.execute(select(Mailbox.email, Mailbox.status))}
        reason = session.get_one(Mailbox, setup["mailbox_id"]).status_reason
    assert statuses[setup["sender"]] == MailboxStatus.NEEDS_RECONNECT
    assert statuses["other@seller.test"] == MailboxStatus.ACTIVE
    assert "refused the login" in (reason or "")


def test_a_copy_of_our_own_message_is_not_a_reply(
    setup: dict[str, Any], dovecot: DovecotServer
) -> None:
    """A Bcc-to-self copy of a follow-up (its Message-ID is ours) from an alias address."""
    copy = message("alias@seller.test", "dana@acme.test", setup["message_id"])
    copy = copy.replace(b"Message-ID: ", b"X-Original-ID: ", 1)
    dovecot.deliver(
        setup["sender"], b"Message-ID: " + setup["message_id"].encode() + b"\r\n" + copy
    )
    assert sync_mailbox(setup["mailbox_id"]).outcomes == {"own": 1}
    assert events() == {}
