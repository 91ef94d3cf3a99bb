"""The provider contract, continued: which ids link a reply to what we sent.

For every provider of the contract suite (`test_provider_contract`), through the
real client libraries and the real engine:

- the provider gives our message its own Message-ID (Gmail on send; Exchange
  Online through Graph, and Exchange through EWS, when the draft is created):
  we store the id the provider shows, and a reply naming it ends the sequence.
  Our own id never reaches the prospect, so a product that kept it would never
  see a reply;
- a reply whose only link to us is in References ends the sequence: many
  clients leave In-Reply-To out, and in a thread that went on without us it
  names someone else's message (a colleague answering a colleague).
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, cast

import pytest

from config import Settings
from core.db import session_scope
from core.models import SentMessage
from tests.integration.provider_harness import Harness
from tests.integration.test_provider_contract import (
    COMBINATIONS,
    harness,
    make_seller,
    send_first_step,
    state_of,
)
from worker.matching.msgid import normalize_msgid
from worker.sync.engine import sync_mailbox

__all__ = ["harness"]  # the fixture, shared with test_provider_contract
# PostgreSQL only: which ids link a reply is the same on either database (the
# contract suite covers both), and CI time is counted.
ON_POSTGRESQL = [(kind, db) for kind, db in COMBINATIONS if db == "postgresql"]
pytestmark = pytest.mark.parametrize(
    ("harness", "database_url"),
    ON_POSTGRESQL,
    indirect=True,
    ids=[kind for kind, _ in ON_POSTGRESQL],
)

# What each fake's store calls "the provider assigns its own id".
OWN_ID_POLICY = {"gmail": "replace", "graph": "assign", "exchange": "assign"}


def assign_own_ids(harness: Harness) -> None:
    policy = OWN_ID_POLICY.get(harness.kind)
    if policy is None:
        pytest.skip("the SMTP server here delivers byte for byte: it never assigns a Message-ID")
    fake: Any = cast(Any, harness).fake  # every harness but IMAP's drives a fake server
    fake.store.message_id_policy = policy


def reply(
    author: str,
    to: str,
    *,
    in_reply_to: str | None,
    references: list[str],
    subject: str = "Re: Quick question",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    if in_reply_to is not None:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    msg.set_content("Let's talk on Tuesday.\n")
    return msg.as_bytes()


def test_a_reply_naming_the_id_the_provider_assigned_ends_the_sequence(
    env: Settings, harness: Harness
) -> None:
    assign_own_ids(harness)
    seller = make_seller(harness)
    enrollment, stored = send_first_step(seller, "dana@acme.test")
    [copy] = harness.sent_copies(seller.address)
    theirs = normalize_msgid(copy.message_id or "")
    assert theirs is not None
    assert not theirs.endswith(f"@{seller.address.rpartition('@')[2]}>"), theirs  # not ours
    assert stored == theirs  # what the prospect got is what we match replies against
    sync_mailbox(seller.mailbox_id)

    answer = reply("dana@acme.test", seller.address, in_reply_to=theirs, references=[theirs])
    harness.deliver(seller.address, answer)

    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert state_of(enrollment) == ("replied", "reply from dana@acme.test")
    with session_scope() as session:
        sent = session.get_one(SentMessage, 1)
        assert sent.message_id == theirs and sent.provider_message_id


@pytest.mark.parametrize("in_reply_to", ["missing", "another message"])
def test_a_reply_linked_to_us_only_by_references_ends_the_sequence(
    env: Settings, harness: Harness, in_reply_to: str
) -> None:
    seller = make_seller(harness)
    enrollment, ours = send_first_step(seller, "dana@acme.test")
    other, _ = send_first_step(seller, "lee@globex.test")
    sync_mailbox(seller.mailbox_id)
    # Dana forwarded us to her boss; the boss answers Dana's note, copying us in.
    danas_note = "<note.1@acme.test>"
    answer = reply(
        "boss@acme.test",
        seller.address,
        in_reply_to=None if in_reply_to == "missing" else danas_note,
        references=["<older.thread@acme.test>", ours, danas_note],
    )
    harness.deliver(seller.address, answer)

    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert state_of(enrollment) == ("replied", "reply from boss@acme.test")
    assert state_of(other)[0] == "active"  # the link named one message: only its sequence ends
