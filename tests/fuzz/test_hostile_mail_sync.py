"""What the fuzzers found, end to end on Dovecot: hostile mail never stops a mailbox's sync.

And a message too slow to classify is quarantined with its
reason, the sync goes on (its cursor saved, a padded reply recorded), and the
message is read on a later try (RQ's job timeout: tests/integration/test_sync_job_timeout.py).

Before the fixes, one message whose Message-ID held an 8-bit byte made the IMAP
listing raise (`summarize_headers`), so every sync of that mailbox failed from
then on and no later reply was ever seen; a reply holding a NUL byte could not
be stored on PostgreSQL, so its sequence went on sending.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from config import get_settings
from core.db import session_scope
from core.models import Enrollment, InboundMessage, Mailbox, utcnow
from tests.integration.test_sync_engine import message, setup
from tests.services.dovecot import DovecotServer
from worker.sync.engine import sync_mailbox
from worker.sync.imap_folders import folder_states

__all__ = ["setup"]  # the fixture, shared with test_sync_engine

HOSTILE = [
    b"From: spam@spam.test\r\nMessage-ID: <caf\xe9.1@spam.test>\r\nSubject: hi\r\n\r\nx\r\n",
    b"From: =?utf-8?B?x?= <a@spam.test>\r\nMessage-ID: <b64@spam.test>\r\n\r\nx\r\n",
    b"From: a@spam.test\r\nIn-Reply-To: <\xff\xfe@spam.test>\r\nSubject: \x00\r\n\r\n\x00\r\n",
]


def test_hostile_mail_does_not_stop_the_sync_and_a_nul_reply_halts(
    setup: dict[str, Any], dovecot: DovecotServer
) -> None:
    for raw in HOSTILE:
        dovecot.deliver(setup["sender"], raw)
    reply = message("boss@acme.test", setup["sender"], setup["message_id"], "Yes\x00 please.\n")
    dovecot.deliver(setup["sender"], reply)

    stats = sync_mailbox(setup["mailbox_id"])

    assert stats.outcomes.get("recorded") == 1, stats
    assert stats.quarantined == 0
    with session_scope() as session:
        assert session.get_one(Enrollment, setup["enrollment_id"]).state == "replied"
        assert session.get_one(Mailbox, setup["mailbox_id"]).status == "active"
        texts = session.scalars(select(InboundMessage.text)).all()
    assert len(texts) == 1 and "please." in (texts[0] or "") and "\x00" not in (texts[0] or "")


# -- one slow message must neither stall the mailbox nor lose a reply -------------------------


def slow_reply(author: str, to: str, in_reply_to: str, parts: int = 60_000) -> bytes:
    """A reply of `parts` tiny MIME parts (38 bytes each): ~25 µs a part to read, all linear."""
    return (
        (
            f"From: {author}\r\nTo: {to}\r\nSubject: Re: Hi\r\n"
            f"Message-ID: <slow.{parts}.{author}>\r\nIn-Reply-To: {in_reply_to}\r\n"
            "Content-Type: multipart/mixed; boundary=XX\r\n\r\n"
        ).encode()
        + b"--XX\r\nContent-Type: text/plain\r\n\r\nok\r\n" * parts
        + b"--XX--\r\n"
    )


def padded_reply(to: str, in_reply_to: str) -> bytes:
    body = "Yes, Tuesday at 10.\r\n" + "\r\n" * 600 + " \t \r\n" * 2_000 + "=" * 5_000 + "\r\n"
    return (
        "From: Dana <dana@acme.test>\r\n"
        f"To: {to}\r\nSubject: Re: Hi\r\nMessage-ID: <padded.1@acme.test>\r\n"
        f"In-Reply-To: {in_reply_to}\r\n"
        "References: " + " ".join(f"<t{n}@acme.test>" for n in range(10_000)) + "\r\n"
        f"\r\n{body}"
    ).encode()


def _budget(monkeypatch: pytest.MonkeyPatch, milliseconds: int) -> None:
    monkeypatch.setenv("SIGHTLINE_CLASSIFY_BUDGET_MS", str(milliseconds))
    get_settings.cache_clear()


def _inbound() -> dict[str, InboundMessage]:
    with session_scope() as session:
        rows = session.scalars(select(InboundMessage)).all()
        session.expunge_all()
    return {str(row.rfc_message_id): row for row in rows}


def test_a_slow_message_is_quarantined_retried_and_read_while_the_reply_halts_the_sequence(
    setup: dict[str, Any], dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = slow_reply("boss@acme.test", setup["sender"], setup["message_id"], parts=120_000)
    dovecot.deliver(setup["sender"], slow)
    dovecot.deliver(setup["sender"], padded_reply(setup["sender"], setup["message_id"]))
    # On a quiet machine the slow one needs ~3 s to read in full, the padded reply (10,000
    # References, 195 KB) 40-90 ms: a 1 s budget leaves each a margin of 3 and 10 or more,
    # for a faster machine and for a full test run's load (0.3 s once quarantined both).
    _budget(monkeypatch, 1_000)

    stats = sync_mailbox(setup["mailbox_id"])

    assert stats.quarantined == 1 and stats.outcomes == {"recorded": 1}, stats
    with session_scope() as session:
        assert session.get_one(Enrollment, setup["enrollment_id"]).state == "replied"
        mailbox = session.get_one(Mailbox, setup["mailbox_id"])
        assert mailbox.status == "active" and mailbox.sync_cursor is not None
        cursor = dict(mailbox.sync_cursor)
    rows = _inbound()
    reply = rows["<padded.1@acme.test>"]
    assert reply.kind == "reply" and not reply.quarantined
    assert (reply.text or "").startswith("Yes, Tuesday at 10.")
    held = rows["<slow.120000.boss@acme.test>"]
    assert held.quarantined and held.kind == "quarantined"
    assert held.error == "classification took longer than 1 s"
    assert held.details is not None and held.details["retry"]["attempts"] == 1
    assert held.details["retry"]["next_at"] > utcnow().strftime("%Y-%m-%dT%H:%M:%S")

    # The next sync goes on from the saved cursor: nothing is fetched again early, and
    # no folder's position moves (finding nothing new, it lists the folders again).
    again = sync_mailbox(setup["mailbox_id"])
    assert (again.fetched, again.quarantined, again.outcomes) == (0, 0, {}), again
    with session_scope() as session:
        after = session.get_one(Mailbox, setup["mailbox_id"]).sync_cursor
        assert folder_states(after) == folder_states(cursor) != {}

    # Five minutes later (its next try is due), with a budget that fits: it is read.
    with session_scope() as session:
        row = session.get_one(InboundMessage, held.id)
        assert row.details is not None
        row.details = {"retry": {**row.details["retry"], "next_at": "2000-01-01T00:00:00"}}
    _budget(monkeypatch, 30_000)
    retried = sync_mailbox(setup["mailbox_id"])
    assert retried.outcomes == {"recorded": 1} and retried.quarantined == 0, retried
    read = _inbound()["<slow.120000.boss@acme.test>"]
    assert (read.id, read.kind, read.quarantined, read.error) == (held.id, "reply", False, None)
