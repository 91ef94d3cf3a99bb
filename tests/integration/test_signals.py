"""Signals on both engines: what a bounce, a complaint, an out-of-office or a
"remove me" does to the prospect's enrolments, recorded once with its reason.

Inbound mail here is built the way real servers write it (a Postfix DSN with
the original attached, an RFC 5965 ARF report, an Exchange out-of-office) and
goes through the real path: `handle_inbound` → classify → match → rule. The
end-to-end versions, with Dovecot, SMTP and the worker processes, are in
test_signals_e2e.py.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest
from sqlalchemy import func, select

from config import Settings, get_settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Enrollment,
    EnrollmentTransition,
    Event,
    Mailbox,
    Prospect,
    SalesforceOutbox,
    SentMessage,
    Sequence,
    SequenceStep,
    Team,
    utcnow,
)
from worker.sequences import claiming, delivering, enrolling
from worker.sequences.enrolling import EnrollmentError
from worker.sync.base import SendResult
from worker.sync.inbound import MailboxRef, Outcome, handle_inbound
from worker.sync.mime import summarize_headers

SENDER = "rep@seller.test"
PROSPECT = "dana@acme.test"

# --- mail as servers write it -------------------------------------------------


def _dsn(
    original: bytes,
    *,
    sender: str,
    recipient: str,
    action: str,
    status: str,
    diagnostic: str,
    human: str,
    subject: str = "Undelivered Mail Returned to Sender",
    headers_only: bool = False,
) -> bytes:
    """A Postfix-style RFC 3464 report with the original (or its headers) attached."""
    boundary = "4F1A2B3C4D.1772543722/mail.seller.test"
    domain = sender.rpartition("@")[2]
    if headers_only:
        head = original.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        attached = (
            b"Content-Description: Undelivered Message Headers\r\n"
            b"Content-Type: text/rfc822-headers\r\n\r\n" + head + b"\r\n"
        )
    else:
        attached = (
            b"Content-Description: Undelivered Message\r\n"
            b"Content-Type: message/rfc822\r\n\r\n" + original.rstrip(b"\r\n") + b"\r\n"
        )
    report = f"""Return-Path: <>
Date: {format_datetime(dt.datetime.now(dt.UTC))}
From: MAILER-DAEMON@{domain} (Mail Delivery System)
Subject: {subject}
To: {sender}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Message-Id: {make_msgid(domain=domain)}

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.{domain}.

{human}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.{domain}
X-Postfix-Queue-ID: 4F1A2B3C4D
X-Postfix-Sender: rfc822; {sender}
Arrival-Date: {format_datetime(dt.datetime.now(dt.UTC))}

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.{recipient.rpartition("@")[2]}
Diagnostic-Code: smtp; {diagnostic}

--{boundary}
""".replace("\n", "\r\n").encode()
    return report + attached + f"\r\n--{boundary}--\r\n".encode()


def hard_bounce(original: bytes, sender: str, recipient: str) -> bytes:
    diagnostic = f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown"
    return _dsn(
        original,
        sender=sender,
        recipient=recipient,
        action="failed",
        status="5.1.1",
        diagnostic=diagnostic,
        human=(
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients. It's attached below.\n\n"
            f"<{recipient}>: host mx.acme.test[192.0.2.10] said: {diagnostic}\n"
            "    (in reply to RCPT TO command)"
        ),
    )


def soft_bounce(original: bytes, sender: str, recipient: str) -> bytes:
    diagnostic = f"552 5.2.2 <{recipient}>: Mailbox full"
    return _dsn(
        original,
        sender=sender,
        recipient=recipient,
        action="failed",
        status="5.2.2",
        diagnostic=diagnostic,
        human=(
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients. It's attached below.\n\n"
            f"<{recipient}>: host mx.acme.test[192.0.2.10] said: {diagnostic}\n"
            "    (in reply to RCPT TO command)"
        ),
    )


def delay_notice(original: bytes, sender: str, recipient: str) -> bytes:
    return _dsn(
        original,
        sender=sender,
        recipient=recipient,
        action="delayed",
        status="4.4.1",
        diagnostic="connect to mx.acme.test[192.0.2.10]:25: Connection timed out",
        human=(
            "####################################################################\n"
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
            "####################################################################\n\n"
            "Your message could not be delivered for more than 4 hour(s).\n"
            "It will be retried until it is 5 day(s) old.\n\n"
            f"<{recipient}>: connect to mx.acme.test[192.0.2.10]:25: Connection timed out"
        ),
        subject="Delayed Mail (still being retried)",
        headers_only=True,
    )


def arf_complaint(original: bytes, sender: str, recipient: str) -> bytes:
    """An RFC 5965 feedback report about `original`, as a mailbox provider's FBL sends it."""
    boundary = "----=_Part_ARF_1772543722"
    report = f"""From: Feedback Loop <fbl@feedback.mailprovider.test>
To: {sender}
Date: {format_datetime(dt.datetime.now(dt.UTC))}
Subject: complaint about message from 192.0.2.1
Message-ID: {make_msgid(domain="feedback.mailprovider.test")}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
\tboundary="{boundary}"

--{boundary}
Content-Type: text/plain; charset="US-ASCII"

This is an email abuse report for an email message received from IP
192.0.2.1. For more information about this format please see
https://www.rfc-editor.org/rfc/rfc5965.

--{boundary}
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: ExampleFBL/1.0
Version: 1
Original-Mail-From: <{sender}>
Original-Rcpt-To: <{recipient}>
Arrival-Date: {format_datetime(dt.datetime.now(dt.UTC))}
Source-IP: 192.0.2.1
Reported-Domain: {sender.rpartition("@")[2]}

--{boundary}
Content-Type: message/rfc822

""".replace("\n", "\r\n").encode()
    return report + original.rstrip(b"\r\n") + f"\r\n\r\n--{boundary}--\r\n".encode()


def out_of_office(message_id: str, author: str, sender: str, body: str) -> bytes:
    """An Exchange/Outlook automatic reply to `message_id`."""
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = sender
    msg["Subject"] = "Automatic reply: Hello Dana"
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    msg.set_content(body)
    return msg.as_bytes()


def person_reply(message_id: str, author: str, sender: str, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = sender
    msg["Subject"] = "Re: Hello Dana"
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg.set_content(body)
    return msg.as_bytes()


# --- a team with two sequences for the same prospect ---------------------------


@pytest.fixture
def team(env: Settings) -> dict[str, int]:
    now = utcnow() - timedelta(seconds=1)
    with session_scope() as session:
        team = Team(name="Sales")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id, kind="imap", email=SENDER, credentials_encrypted=encrypt_json({})
        )
        session.add(mailbox)
        session.flush()
        ids: dict[str, int] = {"team": team.id, "mailbox": mailbox.id}
        for name in ("intro", "webinar"):
            sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name=name)
            sequence.steps = [
                SequenceStep(position=0, delay_seconds=0, subject="Hello {{first_name}}",
                             body_html="<p>One</p>"),
                SequenceStep(position=1, delay_seconds=3600, subject="", body_html="<p>Two</p>",
                             same_thread=True),
            ]  # fmt: skip
            session.add(sequence)
            session.flush()
            enrollment = enrolling.enroll(
                session, sequence=sequence, email=PROSPECT, name="Dana Scully", now=now
            )
            ids[name] = enrollment.id
            ids[f"{name}_sequence"] = sequence.id
        return ids


def send_step(enrollment_id: int) -> tuple[int, bytes]:
    """Claim the due step and record it as sent (the real bookkeeping); its bytes."""
    with session_scope() as session:
        sent = claiming.claim_due_step(session, enrollment_id, utcnow())
        assert sent is not None, "no step was due"
        sent_id, message_id = sent.id, sent.message_id
        subject = sent.subject
    delivering._record_sent(sent_id, SendResult(message_id=message_id))
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = PROSPECT
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    msg.set_content("Hi Dana, a quick question.")
    return sent_id, msg.as_bytes()


def deliver_inbound(raw: bytes, provider_id: str | None = None) -> Outcome:
    with session_scope() as session:
        mailbox = session.scalars(select(Mailbox)).one()
        ref = MailboxRef(mailbox.id, mailbox.team_id, mailbox.email)
    summary = summarize_headers(raw, provider_id or make_msgid())
    with session_scope() as session:
        return handle_inbound(session, ref, summary, raw)


def enrollment(enrollment_id: int) -> Enrollment:
    with session_scope() as session:
        found = session.get_one(Enrollment, enrollment_id)
        session.expunge(found)
        return found


def prospect() -> Prospect:
    with session_scope() as session:
        found = session.scalars(select(Prospect).where(Prospect.email == PROSPECT)).one()
        session.expunge(found)
        return found


def events(kind: str) -> list[Event]:
    with session_scope() as session:
        found = list(session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id)))
        for event in found:
            session.expunge(event)
        return found


def outbox_kinds() -> list[str]:
    with session_scope() as session:
        return sorted(session.scalars(select(SalesforceOutbox.kind)))


def make_due(enrollment_id: int) -> None:
    with session_scope() as session:
        session.get_one(Enrollment, enrollment_id).next_step_at = utcnow()


# --- the rules ------------------------------------------------------------------


def test_hard_bounce_ends_every_enrolment_and_marks_the_address(team: dict[str, int]) -> None:
    _, original = send_step(team["intro"])
    dsn = hard_bounce(original, SENDER, PROSPECT)

    outcome = deliver_inbound(dsn, "uid-1")
    assert (outcome.status, outcome.kind) == ("recorded", "bounce")

    for name in ("intro", "webinar"):  # team-wide: the other sequence stops too
        stopped = enrollment(team[name])
        assert stopped.state == "bounced"
        assert stopped.state_reason == f"hard bounce 5.1.1 userunknown ({PROSPECT})"
        assert stopped.next_step_at is None
    assert prospect().undeliverable_at is not None
    [event] = events("bounce")
    assert (event.data["status"], event.data["reason"], event.data["hard"]) == (
        "5.1.1",
        "userunknown",
        True,
    )
    assert "User unknown" in event.data["diagnostic"]
    assert outbox_kinds() == ["task_bounce", "task_sent"]

    # No further step: nothing can be claimed, even when it falls due.
    make_due(team["intro"])
    with session_scope() as session:
        assert claiming.claim_due_step(session, team["intro"], utcnow()) is None

    # Seen again (a re-run sync, a teammate's copy): nothing twice.
    assert deliver_inbound(dsn, "uid-1").status == "duplicate"
    assert len(events("bounce")) == 1
    assert outbox_kinds() == ["task_bounce", "task_sent"]

    # Enrolling the address again is refused.
    with session_scope() as session:
        sequence = session.get_one(Sequence, team["intro_sequence"])
        other = Sequence(team_id=sequence.team_id, mailbox_id=sequence.mailbox_id, name="later")
        other.steps = [SequenceStep(position=0, delay_seconds=0, subject="x", body_html="y")]
        session.add(other)
        session.flush()
        with pytest.raises(EnrollmentError, match="undeliverable"):
            enrolling.enroll(session, sequence=other, email=PROSPECT, name=None, now=utcnow())


def test_soft_bounce_retries_the_step_then_gives_up(
    team: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_SOFT_BOUNCE_LIMIT", "2")
    monkeypatch.setenv("SIGHTLINE_SOFT_BOUNCE_RETRY_SECONDS", "600")
    get_settings.cache_clear()
    first_id, original = send_step(team["intro"])
    assert enrollment(team["intro"]).steps_sent == 1

    before = utcnow()
    assert deliver_inbound(soft_bounce(original, SENDER, PROSPECT)).kind == "soft_bounce"
    retried = enrollment(team["intro"])
    assert retried.state == "active"
    assert (retried.next_step, retried.steps_sent) == (0, 0)
    assert retried.next_step_at is not None
    assert (
        before + timedelta(seconds=599) <= retried.next_step_at <= utcnow() + timedelta(seconds=600)
    )
    assert prospect().undeliverable_at is None
    with session_scope() as session:
        reasons = [
            t.reason
            for t in session.scalars(
                select(EnrollmentTransition).where(
                    EnrollmentTransition.enrollment_id == team["intro"]
                )
            )
        ]
    assert reasons[-1].startswith("step 1 soft bounce 1 5.2.2 mailboxfull")

    # Not before the back-off; then the same step goes out again as a new message.
    with session_scope() as session:
        assert claiming.claim_due_step(session, team["intro"], utcnow()) is None
    make_due(team["intro"])
    second_id, second = send_step(team["intro"])
    with session_scope() as session:
        first = session.get_one(SentMessage, first_id)
        again = session.get_one(SentMessage, second_id)
        assert (again.step_position, again.attempt) == (0, 1)
        assert again.message_id != first.message_id
        assert again.subject == first.subject
    after_retry = enrollment(team["intro"])
    assert (after_retry.next_step, after_retry.steps_sent) == (1, 1)

    # The second soft bounce within the window reaches the limit: bounced.
    assert deliver_inbound(soft_bounce(second, SENDER, PROSPECT)).kind == "soft_bounce"
    for name in ("intro", "webinar"):
        stopped = enrollment(team[name])
        assert stopped.state == "bounced"
        assert stopped.state_reason == (
            f"2 soft bounces in 7 days; last 5.2.2 mailboxfull ({PROSPECT})"
        )
    assert prospect().undeliverable_at is None  # a full mailbox may empty: re-enrolling works
    assert len(events("soft_bounce")) == 2
    assert outbox_kinds() == ["task_bounce", "task_sent", "task_sent"]


def test_soft_bounce_of_the_last_step_reopens_a_finished_enrolment(
    team: dict[str, int],
) -> None:
    send_step(team["intro"])
    make_due(team["intro"])
    _, last = send_step(team["intro"])
    assert enrollment(team["intro"]).state == "finished"
    deliver_inbound(soft_bounce(last, SENDER, PROSPECT))
    reopened = enrollment(team["intro"])
    assert (reopened.state, reopened.next_step, reopened.steps_sent) == ("active", 1, 1)
    assert reopened.state_reason is not None and "soft bounce" in reopened.state_reason


def test_delay_notice_is_recorded_and_halts_nothing(team: dict[str, int]) -> None:
    _, original = send_step(team["intro"])
    scheduled = enrollment(team["intro"])

    outcome = deliver_inbound(delay_notice(original, SENDER, PROSPECT))
    assert (outcome.status, outcome.kind) == ("recorded", "delayed")

    after = enrollment(team["intro"])
    assert (after.state, after.next_step, after.next_step_at) == (
        "active",
        scheduled.next_step,
        scheduled.next_step_at,
    )
    [event] = events("delayed")
    assert (event.data["status"], event.data["delayed"], event.data["hard"]) == (
        "4.4.1",
        True,
        False,
    )
    assert events("soft_bounce") == []
    assert outbox_kinds() == ["task_sent"]


def test_complaint_opts_the_address_out_everywhere(team: dict[str, int]) -> None:
    _, original = send_step(team["intro"])
    outcome = deliver_inbound(arf_complaint(original, SENDER, PROSPECT))
    assert (outcome.status, outcome.kind) == ("recorded", "complaint")
    for name in ("intro", "webinar"):
        stopped = enrollment(team[name])
        assert stopped.state == "opted_out"
        assert stopped.state_reason == "spam complaint (abuse) via fbl@feedback.mailprovider.test"
    assert prospect().opted_out_at is not None
    [event] = events("complaint")
    assert event.data["complainant"] == PROSPECT
    assert outbox_kinds() == ["task_complaint", "task_sent"]


def test_please_remove_me_opts_the_address_out_everywhere(team: dict[str, int]) -> None:
    sent_id, _ = send_step(team["intro"])
    with session_scope() as session:
        message_id = session.get_one(SentMessage, sent_id).message_id
    raw = person_reply(message_id, PROSPECT, SENDER, "Please remove me from your list.\n")
    assert deliver_inbound(raw).kind == "reply"
    for name in ("intro", "webinar"):
        assert enrollment(team[name]).state == "opted_out"
    assert enrollment(team["intro"]).state_reason == f"asked to be removed ({PROSPECT})"
    assert prospect().opted_out_at is not None
    [event] = events("reply")
    assert event.data["unsubscribe"] is True


def test_out_of_office_pauses_until_the_return_date_and_cron_resumes(
    team: dict[str, int],
) -> None:
    sent_id, _ = send_step(team["intro"])
    with session_scope() as session:
        message_id = session.get_one(SentMessage, sent_id).message_id
    back = (utcnow() + timedelta(days=10)).date()
    body = f"I am out of the office until {back:%d %B %Y} with limited access to email."
    outcome = deliver_inbound(out_of_office(message_id, PROSPECT, SENDER, body))
    assert (outcome.status, outcome.kind) == ("recorded", "auto_reply")

    paused = enrollment(team["intro"])
    resume = dt.datetime.combine(back, dt.time(8), tzinfo=dt.UTC)
    assert (paused.state, paused.resume_at) == ("paused", resume)
    assert paused.state_reason == (
        f"auto-reply from {PROSPECT} (back {back.isoformat()}); resumes {resume:%Y-%m-%d %H:%M} UTC"
    )
    assert enrollment(team["webinar"]).state == "active"  # never ends anything else
    [event] = events("auto_reply")
    assert event.data["until"] == back.isoformat()
    assert event.data["resume_at"] == resume.isoformat()

    # The resume job (what cron runs) leaves it paused before the date, resumes after.
    with session_scope() as session:
        assert enrolling.resume_due(session, utcnow()) == 0
    with session_scope() as session:
        assert enrolling.resume_due(session, resume + timedelta(seconds=1)) == 1
    resumed = enrollment(team["intro"])
    assert (resumed.state, resumed.resume_at, resumed.next_step) == ("active", None, 1)
    assert resumed.next_step_at == resume + timedelta(seconds=1)


def test_out_of_office_without_a_date_pauses_for_the_configured_default(
    team: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_AUTO_REPLY_PAUSE_SECONDS", "7200")
    get_settings.cache_clear()
    sent_id, _ = send_step(team["intro"])
    with session_scope() as session:
        message_id = session.get_one(SentMessage, sent_id).message_id
    before = utcnow()
    deliver_inbound(
        out_of_office(message_id, PROSPECT, SENDER, "I am currently out of the office.")
    )
    paused = enrollment(team["intro"])
    assert paused.state == "paused"
    assert paused.resume_at is not None
    assert before + timedelta(hours=2) <= paused.resume_at <= utcnow() + timedelta(hours=2)


def test_bounce_naming_no_message_id_is_matched_by_the_failed_address(
    team: dict[str, int],
) -> None:
    send_step(team["intro"])
    raw = (
        "From: MAILER-DAEMON@mx.acme.test\r\n"
        f"To: {SENDER}\r\n"
        "Subject: failure notice\r\n"
        f"Message-ID: {make_msgid(domain='mx.acme.test')}\r\n"
        "\r\n"
        "Hi. This is the qmail-send program at mx.acme.test.\r\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        f"<{PROSPECT}>:\r\n"
        "Sorry, no mailbox here by that name. (#5.1.1)\r\n"
    ).encode()
    outcome = deliver_inbound(raw)
    assert (outcome.status, outcome.kind) == ("recorded", "bounce")
    assert enrollment(team["intro"]).state == "bounced"


def test_every_signal_is_in_the_enrolment_history(team: dict[str, int]) -> None:
    _, original = send_step(team["intro"])
    deliver_inbound(delay_notice(original, SENDER, PROSPECT))
    deliver_inbound(hard_bounce(original, SENDER, PROSPECT))
    with session_scope() as session:
        kinds = list(
            session.scalars(
                select(Event.kind).where(Event.enrollment_id == team["intro"]).order_by(Event.id)
            )
        )
        linked = session.scalar(
            select(func.count())
            .select_from(EnrollmentTransition)
            .where(EnrollmentTransition.event_id.is_not(None))
        )
    assert kinds == ["sent", "delayed", "bounce"]
    assert linked == 2  # both enrolments' transitions point at the bounce event


def test_bounce_of_a_cc_address_is_recorded_and_halts_nothing(team: dict[str, int]) -> None:
    sent_id, original = send_step(team["intro"])
    with session_scope() as session:
        session.get_one(SentMessage, sent_id).cc_addrs = ["boss@acme.test"]
    outcome = deliver_inbound(hard_bounce(original, SENDER, "boss@acme.test"), "uid-cc")
    assert (outcome.status, outcome.kind) == ("recorded", "other_bounce")
    assert enrollment(team["intro"]).state == "active"
    assert prospect().undeliverable_at is None
    [event] = events("other_bounce")
    assert event.data["bounce"][0]["recipient"] == "boss@acme.test"
