"""What the fuzzers found, end to end on Dovecot: hostile mail never stops a mailbox's sync.

Before the fixes, one message whose Message-ID held an 8-bit byte made the IMAP
listing raise (`summarize_headers`), so every sync of that mailbox failed from
then on and no later reply was ever seen; a reply holding a NUL byte could not
be stored on PostgreSQL, so its sequence went on sending.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.db import session_scope
from core.models import Enrollment, InboundMessage, Mailbox
from tests.integration.test_sync_engine import message, setup
from tests.services.dovecot import DovecotServer
from worker.sync.engine import sync_mailbox

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
