"""The subject rule's lookup (`worker.matching.threads.find_by_subject`) on SQLite and PostgreSQL.

A reply that lost its threading headers answers our newest send from this mailbox
in the window, to its sender (the prospect row, or the address in To or Cc),
with the same subject. The address is looked for in the stored address lists as
text, so what LIKE would read as a wildcard (`_`, `%`) must match only itself.
"""

from __future__ import annotations

from datetime import timedelta

from config import Settings
from core.db import session_scope
from core.models import Mailbox, Prospect, SendStatus, SentMessage, Team, utcnow
from worker.matching.threads import find_by_subject

WINDOW = timedelta(days=30)


def seed() -> dict[str, int]:
    """Two mailboxes of one team and the sends the cases below look among."""
    now = utcnow()
    with session_scope() as session:
        team = Team(name="Acme")
        session.add(team)
        session.flush()
        mine = Mailbox(
            team_id=team.id, kind="imap", email="rep@seller.test", credentials_encrypted="-"
        )
        other = Mailbox(
            team_id=team.id, kind="imap", email="other@seller.test", credentials_encrypted="-"
        )
        dana = Prospect(team_id=team.id, email="dana@acme.test", name="Dana")
        session.add_all([mine, other, dana])
        session.flush()

        def send(n: int, subject: str, to: list[str], **extra: object) -> int:
            fields: dict[str, object] = {
                "team_id": team.id,
                "mailbox_id": mine.id,
                "message_id": f"<s{n}@seller.test>",
                "subject": subject,
                "to_addrs": to,
                "status": SendStatus.SENT,
                "sent_at": now - timedelta(days=1, minutes=n),
                **extra,
            }
            sent = SentMessage(**fields)
            session.add(sent)
            session.flush()
            return sent.id

        ids = {
            "team": team.id,
            "mailbox": mine.id,
            "other_mailbox": other.id,
            # Dana as the prospect, and an older send to her by address only.
            "dana": send(1, "Quick question", ["Dana@Acme.test"], prospect_id=dana.id),
            "dana_older": send(2, "Quick question", ["dana@acme.test"]),
            "cc": send(3, "Pricing", ["lee@globex.test"], cc_addrs=["Kim@Initech.test"]),
            "underscore": send(4, "Agenda", ["a_b@acme.test"]),
            "percent": send(5, "Notes", ["100%@acme.test"]),
            "old": send(6, "Ancient", ["dana@acme.test"], sent_at=now - timedelta(days=90)),
            "failed": send(7, "Failed one", ["dana@acme.test"], status=SendStatus.FAILED),
            "elsewhere": send(8, "Other box", ["dana@acme.test"], mailbox_id=other.id),
        }
    return ids


def lookup(ids: dict[str, int], sender: str, subject: str) -> int | None:
    with session_scope() as session:
        found = find_by_subject(
            session,
            team_id=ids["team"],
            mailbox_id=ids["mailbox"],
            sender=sender,
            subject=subject,
            since=utcnow() - WINDOW,
        )
        return found.id if found is not None else None


def test_the_newest_send_to_the_sender_with_that_subject(env: Settings) -> None:
    ids = seed()
    assert lookup(ids, "DANA@acme.test", "RE:  quick QUESTION") == ids["dana"]
    assert lookup(ids, "kim@initech.test", "Re: Pricing") == ids["cc"]  # on Cc, any case
    assert lookup(ids, "lee@globex.test", "AW: Pricing") == ids["cc"]


def test_nothing_outside_the_rule(env: Settings) -> None:
    ids = seed()
    assert lookup(ids, "dana@acme.test", "Re: Something else") is None  # another subject
    assert lookup(ids, "fox@acme.test", "Re: Quick question") is None  # not sent to this sender
    assert lookup(ids, "dana@acme.test", "Re: Ancient") is None  # before the window
    assert lookup(ids, "dana@acme.test", "Re: Failed one") is None  # never sent
    assert lookup(ids, "dana@acme.test", "Re: Other box") is None  # another mailbox's send
    assert lookup(ids, "", "Re: Quick question") is None
    assert lookup(ids, "dana@acme.test", "Re: ") is None


def test_like_wildcards_in_an_address_match_only_themselves(env: Settings) -> None:
    ids = seed()
    assert lookup(ids, "a_b@acme.test", "Re: Agenda") == ids["underscore"]
    assert lookup(ids, "axb@acme.test", "Re: Agenda") is None  # `_` is not any character
    assert lookup(ids, "100%@acme.test", "Re: Notes") == ids["percent"]
    assert lookup(ids, "100x@acme.test", "Re: Notes") is None
    assert lookup(ids, "1%@acme.test", "Re: Notes") is None  # `%` is not any run
