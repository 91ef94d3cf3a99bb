"""Fuzzing inbound mail: no message may crash a sync, or be silently misread because of a crash.

`classify_message` catches the errors hostile bytes can raise in the parsers,
logs `classify_failed` and answers `quarantined` (the message is kept and
retried, not read). So the property here is stronger than "never raises": the
last resort is never needed (run without a time budget, so that `quarantined`
can only mean that). Header parsing (`summarize_headers`, `summary_from_headers`,
`reference_candidates`) must never raise either; `handle_inbound` must record a
person's reply as a reply whatever its subject, sender or text hold (both
databases), never ignore it; and a quarantined message is kept, with its
reason, where a person sees it.

Counts: `tests/fuzz/profiles.py` (CI) and SECURITY.md (the long run).
"""

from __future__ import annotations

import email
import email.policy
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from itertools import count

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import select

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Enrollment, InboundMessage, Mailbox, Sequence, SequenceStep, Team, utcnow
from tests.fuzz.mail import any_text, header_block, header_values, messages, reports
from tests.fuzz.profiles import fuzz
from worker.matching.classify import classify_message
from worker.matching.msgid import parse_msgid_list, reference_candidates
from worker.sequences import claiming, delivering, enrolling
from worker.sync.base import SendResult
from worker.sync.headers import summary_from_headers
from worker.sync.inbound import (
    MailboxRef,
    handle_inbound,
    quarantine,
    storable_summary,
    storable_text,
)
from worker.sync.mime import summarize_headers

KINDS = {"reply", "auto_reply", "bounce", "complaint", "other"}


class _Failures(logging.Handler):
    """Collects `classify_failed` lines: the last resort that turns a message into `other`."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "classify_failed" in str(record.msg):
            self.lines.append(record.getMessage())


@pytest.fixture
def classify_failures() -> Iterator[_Failures]:
    handler = _Failures()
    logger = logging.getLogger("worker.matching.classify")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _classify_cleanly(raw: bytes, failures: _Failures) -> None:
    before = len(failures.lines)
    result = classify_message(raw, budget=None)
    assert result.kind in KINDS, result.reason
    assert failures.lines[before:] == [], f"classify needed its last resort on {raw[:300]!r}"
    for msgid in result.refers_to:
        assert msgid.startswith("<") and msgid.endswith(">") and "@" in msgid


@fuzz(300)
@given(messages())
def test_classify_needs_no_last_resort_on_structured_mail(
    classify_failures: _Failures, raw: bytes
) -> None:
    _classify_cleanly(raw, classify_failures)


@fuzz(200)
@given(reports())
def test_classify_needs_no_last_resort_on_reports(classify_failures: _Failures, raw: bytes) -> None:
    _classify_cleanly(raw, classify_failures)


@fuzz(200)
@given(st.binary(max_size=3000))
def test_classify_needs_no_last_resort_on_random_bytes(
    classify_failures: _Failures, raw: bytes
) -> None:
    _classify_cleanly(raw, classify_failures)


@fuzz(300)
@given(header_block())
def test_header_summaries_never_raise(block: str) -> None:
    raw = block.encode("utf-8", "surrogateescape") + b"\r\n\r\n"
    summary = summarize_headers(raw, "INBOX:1")
    assert summary.provider_id
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert summary.candidates == reference_candidates(msg)
    names = [k.lower() for k in msg]
    if names.count("in-reply-to") <= 1 and names.count("references") <= 1:
        # A provider hands over the same headers one value each: the same candidates.
        # It hands them over as text (Gmail's JSON is UTF-8), not as compat32's Header
        # objects, whose str() turns every non-ASCII byte into U+FFFD.
        text = email.message_from_string(
            raw.decode("utf-8", "replace"), policy=email.policy.compat32
        )
        lowered = {k.lower(): str(v) for k, v in text.items()}
        again = summary_from_headers(lowered, provider_id=None, fetch_ref="ref")
        assert again.candidates == summary.candidates


@fuzz(300)
@given(st.dictionaries(st.sampled_from(["from", "subject", "message-id", "in-reply-to",
                                        "references", "x"]), header_values))  # fmt: skip
# Found by the long run: an unclosed quote in the domain swallowed the closing
# bracket, and the id made of it read back as another id.
@example({"in-reply-to": '<0@">'})
@example({"references": '<0@"> <1@x>', "message-id": '<"a@b>'})
def test_provider_header_values_never_raise(headers: dict[str, str]) -> None:
    summary = summary_from_headers(headers, provider_id=None, fetch_ref="g-1")
    for msgid in summary.candidates:
        assert parse_msgid_list(msgid) == [msgid]


# -- a reply is recorded whatever it holds --------------------------------------------------

_serial = count()


@pytest.fixture
def sequence_id(env: Settings) -> int:
    with session_scope() as session:
        team = Team(name="Fuzz")
        session.add(team)
        session.flush()
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
            SequenceStep(position=0, delay_seconds=0, subject="Hello", body_html="<p>One</p>"),
            SequenceStep(position=1, delay_seconds=3600, subject="", body_html="<p>Two</p>"),
        ]
        session.add(sequence)
        session.flush()
        return int(sequence.id)


def _sent_step(sequence_id: int) -> tuple[int, str]:
    """A fresh prospect's step 1, claimed and recorded as sent: (enrolment id, Message-ID)."""
    email_address = f"p{next(_serial)}@acme.test"
    with session_scope() as session:
        sequence = session.get_one(Sequence, sequence_id)
        enrollment = enrolling.enroll(
            session,
            sequence=sequence,
            email=email_address,
            name=None,
            now=utcnow() - timedelta(seconds=1),
        )
        enrollment_id = enrollment.id
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, utcnow())
        assert sent is not None
        sent_id, message_id = sent.id, sent.message_id
    delivering._record_sent(sent_id, SendResult(message_id=message_id))
    return enrollment_id, message_id


@fuzz(40)
@given(subject=any_text, author_name=any_text, body=any_text)
def test_a_reply_is_recorded_whatever_its_text(
    sequence_id: int, subject: str, author_name: str, body: str
) -> None:
    enrollment_id, message_id = _sent_step(sequence_id)
    one_line = str.maketrans("\r\n", "  ")
    # Written out byte by byte: the email package refuses to serialise some of
    # these names, and mailers on the internet do not ask it.
    raw = (
        f"From: {author_name.translate(one_line)} <dana@acme.test>\r\n"
        "To: rep@seller.test\r\n"
        f"Subject: {subject.translate(one_line)}\r\n"
        f"Message-ID: <reply.{next(_serial)}@acme.test>\r\n"
        f"In-Reply-To: {message_id}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{body}"
    ).encode("utf-8", "surrogatepass")
    with session_scope() as session:
        mailbox = session.scalars(select(Mailbox)).one()
        ref = MailboxRef(mailbox.id, mailbox.team_id, mailbox.email)
    summary = summarize_headers(raw, "INBOX:1")
    with session_scope() as session:
        outcome = handle_inbound(session, ref, summary, raw, budget=None)
    # A person answered our message: whatever it says, it is a reply, recorded,
    # and it ends the sequence. "ignored" (read as `other`) would let it go on.
    assert (outcome.status, outcome.kind) == ("recorded", "reply"), outcome
    with session_scope() as session:
        assert session.get_one(Enrollment, enrollment_id).state in ("replied", "opted_out")


@fuzz(30)
@given(subject=any_text, sender=any_text, error=any_text)
# Found by the long run: a lone surrogate in the reason (an exception's text can
# carry one) made psycopg refuse the row, so the message was kept nowhere.
@example(subject="Re: x", sender="d@acme.test", error="cannot decode \udcff here")
def test_quarantine_keeps_any_message(
    sequence_id: int, subject: str, sender: str, error: str
) -> None:
    """A message we cannot handle is kept where a person can see it; keeping it never fails."""
    with session_scope() as session:
        mailbox = session.scalars(select(Mailbox)).one()
        ref = MailboxRef(mailbox.id, mailbox.team_id, mailbox.email)
    block = f"Subject: {subject}\r\nFrom: {sender}\r\n\r\n"
    summary = summarize_headers(block.encode("utf-8", "surrogateescape"), "INBOX:7")
    summary = replace(summary, provider_id=f"p{next(_serial)}", fetch_ref="INBOX:7")
    with session_scope() as session:
        quarantine(session, ref, summary, error, retry=True)
    # Kept where a person sees it: the mailbox's quarantined messages, with the
    # reason as given (less the NUL bytes PostgreSQL refuses) and a next try.
    stored = storable_summary(summary)
    with session_scope() as session:
        row = session.scalars(
            select(InboundMessage).where(InboundMessage.provider_id == summary.provider_id)
        ).one()
        assert (row.mailbox_id, row.quarantined) == (ref.id, True)
        assert row.error == storable_text(error)[:4000]
        assert row.subject == (stored.subject or "")[:998]
        assert row.from_addr == stored.from_addr
        assert row.details is not None and row.details["retry"]["attempts"] == 1
        assert row.details["retry"]["next_at"] is not None


def test_a_reply_with_nul_bytes_stops_the_sequence(sequence_id: int) -> None:
    """Found by the fuzzer: PostgreSQL refused the reply's text, so the sequence went on."""
    enrollment_id, message_id = _sent_step(sequence_id)
    raw = (
        "From: Dana\x00 <dana@acme.test>\r\nTo: rep@seller.test\r\n"
        "Subject: Re: Hello\x00\r\nMessage-ID: <nul.1@acme.test>\r\n"
        f"In-Reply-To: {message_id}\r\n\r\nYes\x00, Tuesday works.\r\n"
    ).encode()
    with session_scope() as session:
        mailbox = session.scalars(select(Mailbox)).one()
        ref = MailboxRef(mailbox.id, mailbox.team_id, mailbox.email)
    with session_scope() as session:
        outcome = handle_inbound(session, ref, summarize_headers(raw, "INBOX:9"), raw)
    assert (outcome.status, outcome.kind) == ("recorded", "reply")
    with session_scope() as session:
        assert session.get_one(Enrollment, enrollment_id).state == "replied"
