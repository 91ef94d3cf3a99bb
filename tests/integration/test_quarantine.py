"""Quarantined inbound messages: kept with their reason, tried again with back-off, then kept.

A message over its classification budget is "kept, visible,
retried", never read as `other`. The retry plan lives in the row's JSON details
and is queried there, so this runs on both databases.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import InboundMessage, Mailbox, Team, utcnow
from worker.sync import quarantine as held
from worker.sync.base import HeaderSummary
from worker.sync.inbound import MailboxRef, quarantine

pytestmark = pytest.mark.integration


@pytest.fixture
def mailbox(env: Settings) -> MailboxRef:
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        box = Mailbox(
            team_id=team.id,
            kind="imap",
            email="rep@seller.test",
            credentials_encrypted=encrypt_json({}),
        )
        session.add(box)
        session.flush()
        return MailboxRef(box.id, team.id, box.email)


def summary(n: int = 1) -> HeaderSummary:
    return HeaderSummary(
        provider_id=f"mid:<slow.{n}@acme.test>",
        fetch_ref=f"7:{n}:INBOX",
        rfc_message_id=f"<slow.{n}@acme.test>",
        from_addr="dana@acme.test",
        subject="Re: Hello",
        candidates=[],
        headers={},
    )


def row(provider_id: str) -> InboundMessage:
    with session_scope() as session:
        found = session.scalars(
            select(InboundMessage).where(InboundMessage.provider_id == provider_id)
        ).one()
        session.expunge(found)
        return found


def test_each_try_is_counted_backs_off_and_the_last_keeps_it(mailbox: MailboxRef) -> None:
    reason = "classification took longer than 1.5 s"
    waits = []
    for attempt in range(1, held.MAX_ATTEMPTS + 1):
        before = utcnow().replace(microsecond=0, tzinfo=None)
        with session_scope() as session:
            quarantine(session, mailbox, summary(), reason, retry=True, kind="quarantined")
        kept = row(summary().provider_id)
        assert (kept.quarantined, kept.kind, kept.error) == (True, "quarantined", reason)
        plan = (kept.details or {})["retry"]
        assert (plan["attempts"], plan["fetch_ref"]) == (attempt, "7:1:INBOX")
        if attempt < held.MAX_ATTEMPTS:
            next_at = plan["next_at"]
            waits.append(round((datetime.fromisoformat(next_at) - before).total_seconds() / 60))
            assert held.describe(kept.error, kept.details).startswith(f"{reason}; ")
        else:
            assert plan["next_at"] is None
            assert held.describe(kept.error, kept.details) == f"{reason}; gave up after 5 tries"
    assert waits == [5, 20, 80, 320]  # minutes: 5 min times 4 per try
    with session_scope() as session:  # one row, however many tries
        assert len(session.scalars(select(InboundMessage)).all()) == 1


def test_only_due_messages_are_tried_again_oldest_first(mailbox: MailboxRef) -> None:
    for n in (1, 2):
        with session_scope() as session:
            quarantine(session, mailbox, summary(n), "slow", retry=True, kind="quarantined")
    with session_scope() as session:
        quarantine(session, mailbox, summary(3), "provider could not fetch it")  # kept only
    now = utcnow()
    with session_scope() as session:
        assert held.due_retries(session, mailbox.id, now) == []
        due = held.due_retries(session, mailbox.id, now + timedelta(minutes=6))
    assert [(d.provider_id, d.fetch_ref, d.attempts) for d in due] == [
        ("mid:<slow.1@acme.test>", "7:1:INBOX", 1),
        ("mid:<slow.2@acme.test>", "7:2:INBOX", 1),
    ]
    kept = row(summary(3).provider_id)
    assert kept.quarantined and held.describe(kept.error, kept.details).endswith("not retried")


def test_a_retry_gets_twice_the_budget_per_try_up_to_a_bound() -> None:
    assert [held.retry_budget(1.5, n) for n in (1, 2, 3, 4)] == [3.0, 6.0, 12.0, 16.0]
    assert held.retry_budget(30.0, 1) == 30.0  # a budget set above the bound stays
