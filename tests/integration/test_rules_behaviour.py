"""What a rep sees after a bounce, a complaint, a reply or an out-of-office.

Found by mutation testing (`make mutation`, worker/sequences/rules.py): the
rules' tests passed as well when a soft bounce re-armed every enrolment at the
same step, or re-armed a step after a later one went out; when a reopened
sequence never got a time to send again; when a paused enrolment's bounce went
unrecorded; when one prospect's complaint or bounce marked *every* prospect;
when a later out-of-office shortened or failed to extend the pause, or kept a
return date past the longest pause; when a
report naming several addresses let an address other than the prospect's decide;
and when the enrolment history lost the event that caused a change. Each test
here says what a person sees on the enrolment page (state, next step and its
time, steps sent, the history and the event behind each entry) or in the API's
event data, after real inbound mail goes through `handle_inbound`.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import pytest
from sqlalchemy import select

from config import get_settings
from core.db import session_scope
from core.events import natural_key
from core.models import (
    EnrollmentTransition,
    Event,
    Prospect,
    SentMessage,
    Sequence,
    SequenceStep,
    utcnow,
)
from tests.integration.test_signal_tasks import owed
from tests.integration.test_signals import (
    PROSPECT,
    SENDER,
    arf_complaint,
    deliver_inbound,
    enrollment,
    hard_bounce,
    make_due,
    out_of_office,
    person_reply,
    prospect,
    send_step,
    soft_bounce,
    team,
)
from worker.sequences import claiming, enrolling

__all__ = ["team"]  # the fixture, shared with test_signals

RETRY_SECONDS = 600
FORWARDED_TO = "dana.scully@home.test"  # where Dana's mail is forwarded on to
MAILBOX_FULL = f"5.2.2 mailboxfull ({PROSPECT})"


@pytest.fixture
def retry_after_ten_minutes(team: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGHTLINE_SOFT_BOUNCE_RETRY_SECONDS", str(RETRY_SECONDS))
    get_settings.cache_clear()


# --- what the page shows ----------------------------------------------------------


def history(enrollment_id: int) -> list[EnrollmentTransition]:
    with session_scope() as session:
        rows = list(
            session.scalars(
                select(EnrollmentTransition)
                .where(EnrollmentTransition.enrollment_id == enrollment_id)
                .order_by(EnrollmentTransition.id)
            )
        )
        for row in rows:
            session.expunge(row)
        return rows


def event(event_id: int | None) -> Event:
    assert event_id is not None, "no event was recorded"
    with session_scope() as session:
        found = session.get_one(Event, event_id)
        session.expunge(found)
        return found


def retry_reason(described: str, enrollment_id: int) -> str:
    """The history line of a retried step, with the time the enrolment now shows."""
    at = enrollment(enrollment_id).next_step_at
    assert at is not None, "the retried step has no time to go out"
    return f"step 1 soft bounce 1 {described}; re-sending at {at:%Y-%m-%d %H:%M} UTC"


def bounced_addresses(event_id: int | None) -> list[str]:
    """The addresses the recorded event says the report was about, in its order."""
    return [entry["recipient"] for entry in event(event_id).data["bounce"]]


# --- the team's other sequences and prospects ----------------------------------------


def add_sequence(team: dict[str, int], name: str, steps: int, email: str = PROSPECT) -> int:
    """A sequence of `steps` steps, a day apart, with `email` enrolled; the enrolment's id."""
    with session_scope() as session:
        sequence = Sequence(team_id=team["team"], mailbox_id=team["mailbox"], name=name)
        sequence.steps = [
            SequenceStep(
                position=n, delay_seconds=86400 * n, subject="Hello" if n == 0 else "",
                body_html=f"<p>{n}</p>", same_thread=n > 0,
            )
            for n in range(steps)
        ]  # fmt: skip
        session.add(sequence)
        session.flush()
        return enrolling.enroll(
            session, sequence=sequence, email=email, name=None, now=utcnow() - timedelta(seconds=1)
        ).id


def original_message(message_id: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = PROSPECT
    msg["Subject"] = "Hello Dana"
    msg["Message-ID"] = message_id
    msg.set_content("Hi Dana, a quick question.")
    return msg.as_bytes()


def message_id_of(sent_id: int) -> str:
    with session_scope() as session:
        return session.get_one(SentMessage, sent_id).message_id


# --- reports as servers write them ----------------------------------------------------


def report_naming(original: bytes, entries: list[tuple[str, str, str, str]]) -> bytes:
    """A Postfix-style report with one block per (address, action, status, diagnostic)."""
    boundary = "5A1B2C3D4E.1772543722/mail.seller.test"
    now = format_datetime(dt.datetime.now(dt.UTC))
    human = "\n".join(f"<{a}>: host mx.acme.test said: {d}" for a, _, _, d in entries)
    blocks = "\n".join(
        f"Final-Recipient: rfc822; {address}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}\n"
        for address, action, status, diagnostic in entries
    )
    report = f"""Return-Path: <>
Date: {now}
From: MAILER-DAEMON@seller.test (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {SENDER}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Message-Id: {make_msgid(domain="seller.test")}

--{boundary}
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.seller.test. Your message could not be
delivered to one or more recipients. It's attached below.

{human}

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.seller.test
Arrival-Date: {now}

{blocks}
--{boundary}
Content-Type: message/rfc822

""".replace("\n", "\r\n").encode()
    return report + original.rstrip(b"\r\n") + f"\r\n\r\n--{boundary}--\r\n".encode()


def unreadable_failure(message_id: str) -> bytes:
    """A failure notice that names no recipient, only our message (its headers attached)."""
    return (
        "From: MAILER-DAEMON@mx.acme.test\r\n"
        f"To: {SENDER}\r\n"
        "Subject: Undeliverable: Hello Dana\r\n"
        f"Message-ID: {make_msgid(domain='mx.acme.test')}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b1\r\n"
        "\r\n--b1\r\nContent-Type: text/plain\r\n\r\n"
        "Delivery has failed. Your message could not be delivered.\r\n"
        "\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nFrom: {SENDER}\r\nSubject: Hello Dana\r\n"
        "\r\n--b1--\r\n"
    ).encode()


def out_of_office_until(sent_id: int, back: dt.date | None) -> int | None:
    """Dana's out-of-office answer to `sent_id`; the event it recorded."""
    if back is None:
        body = "I am currently out of the office with limited access to email."
    else:
        body = f"I am out of the office until {back:%d %B %Y} with limited access to email."
    outcome = deliver_inbound(out_of_office(message_id_of(sent_id), PROSPECT, SENDER, body))
    assert outcome.kind == "auto_reply"
    return outcome.event_id


def in_days(days: int) -> dt.date:
    return (utcnow() + timedelta(days=days)).date()


def morning(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(8), tzinfo=dt.UTC)


# --- soft bounces: the step goes out again --------------------------------------------


@pytest.mark.usefixtures("retry_after_ten_minutes")
def test_a_soft_bounce_re_arms_only_the_bounced_step_and_the_history_names_the_bounce(
    team: dict[str, int],
) -> None:
    _, original = send_step(team["intro"])
    send_step(team["webinar"])  # the other sequence is at the same step
    webinar = enrollment(team["webinar"])
    webinar_history = len(history(team["webinar"]))

    before = utcnow()
    outcome = deliver_inbound(soft_bounce(original, SENDER, PROSPECT))

    intro = enrollment(team["intro"])
    assert (intro.state, intro.next_step, intro.steps_sent) == ("active", 0, 0)
    assert intro.next_step_at is not None
    assert before + timedelta(seconds=RETRY_SECONDS - 1) <= intro.next_step_at
    last = history(team["intro"])[-1]
    assert (last.from_state, last.to_state) == ("active", "active")  # "Still active"
    assert last.reason == retry_reason(MAILBOX_FULL, team["intro"])
    assert last.event_id == outcome.event_id
    assert bounced_addresses(outcome.event_id) == [PROSPECT]

    # A second server reports the same message: it is already set to go out again.
    again = deliver_inbound(soft_bounce(original, SENDER, PROSPECT))
    assert enrollment(team["intro"]).next_step_at == intro.next_step_at
    last = history(team["intro"])[-1]
    assert (last.reason, last.event_id) == (
        f"step 1 soft bounce 2 {MAILBOX_FULL}; not re-sent: it is already due to go out again",
        again.event_id,
    )

    after = enrollment(team["webinar"])
    assert (after.state, after.next_step, after.steps_sent, after.next_step_at) == (
        "active",
        1,
        1,
        webinar.next_step_at,
    )
    assert len(history(team["webinar"])) == webinar_history


def test_a_soft_bounce_after_the_next_step_went_out_sends_nothing_again_and_says_so(
    team: dict[str, int],
) -> None:
    three = add_sequence(team, "three", steps=3)
    _, first = send_step(three)
    make_due(three)
    _, second = send_step(three)
    scheduled = enrollment(three)

    outcome = deliver_inbound(soft_bounce(first, SENDER, PROSPECT))

    assert (outcome.status, outcome.kind) == ("recorded", "soft_bounce")
    after = enrollment(three)
    assert (after.state, after.next_step, after.steps_sent, after.next_step_at) == (
        "active",
        2,
        2,
        scheduled.next_step_at,
    )
    last = history(three)[-1]
    assert (last.from_state, last.to_state, last.event_id) == ("active", "active", outcome.event_id)
    assert (
        last.reason == f"step 1 soft bounce 1 {MAILBOX_FULL}; not re-sent: step 2 already went out"
    )

    # The same once the sequence has finished: it stays finished.
    make_due(three)
    send_step(three)
    late = deliver_inbound(soft_bounce(second, SENDER, PROSPECT))
    assert enrollment(three).state == "finished"
    last = history(three)[-1]
    assert (last.from_state, last.to_state, last.event_id) == (
        "finished",
        "finished",
        late.event_id,
    )
    assert (
        last.reason == f"step 2 soft bounce 2 {MAILBOX_FULL}; not re-sent: step 3 already went out"
    )


@pytest.mark.usefixtures("retry_after_ten_minutes")
def test_when_the_only_step_soft_bounces_the_finished_sequence_sends_it_again_later(
    team: dict[str, int],
) -> None:
    single = add_sequence(team, "single", steps=1)
    first_id, original = send_step(single)
    assert (enrollment(single).state, enrollment(single).steps_sent) == ("finished", 1)

    before = utcnow()
    outcome = deliver_inbound(soft_bounce(original, SENDER, PROSPECT))

    reopened = enrollment(single)
    assert (reopened.state, reopened.next_step, reopened.steps_sent) == ("active", 0, 0)
    assert reopened.next_step_at is not None
    assert before + timedelta(seconds=RETRY_SECONDS - 1) <= reopened.next_step_at
    assert reopened.next_step_at <= utcnow() + timedelta(seconds=RETRY_SECONDS)
    last = history(single)[-1]
    assert (last.from_state, last.to_state, last.event_id) == (
        "finished",
        "active",
        outcome.event_id,
    )
    assert last.reason == retry_reason(MAILBOX_FULL, single)

    with session_scope() as session:  # not before the back-off; then as a new attempt
        assert claiming.claim_due_step(session, single, utcnow()) is None
    with session_scope() as session:
        again = claiming.claim_due_step(session, single, reopened.next_step_at)
        assert again is not None
        assert (again.step_position, again.attempt) == (0, 1)
        assert again.message_id != message_id_of(first_id)


def test_a_soft_bounce_while_out_of_office_sends_the_step_again_when_the_pause_ends(
    team: dict[str, int],
) -> None:
    first_id, original = send_step(team["intro"])
    out_of_office_until(first_id, in_days(10))
    paused = enrollment(team["intro"])
    assert (paused.state, paused.next_step) == ("paused", 1)

    outcome = deliver_inbound(soft_bounce(original, SENDER, PROSPECT))

    after = enrollment(team["intro"])
    assert (after.state, after.next_step, after.steps_sent) == ("paused", 0, 0)
    assert after.resume_at == paused.resume_at
    last = history(team["intro"])[-1]
    assert (last.from_state, last.to_state, last.event_id) == (
        "paused",
        "paused",
        outcome.event_id,
    )
    assert last.reason == f"step 1 soft bounce 1 {MAILBOX_FULL}; re-sending when it resumes"

    assert paused.resume_at is not None
    with session_scope() as session:
        assert enrolling.resume_due(session, paused.resume_at) == 1
    with session_scope() as session:
        again = claiming.claim_due_step(session, team["intro"], paused.resume_at)
        assert again is not None
        assert (again.step_position, again.attempt) == (0, 1)


def test_a_bounce_that_overtakes_the_sends_bookkeeping_never_counts_below_zero(
    team: dict[str, int],
) -> None:
    """The provider took the step and its server bounced it before we recorded the send."""
    with session_scope() as session:
        claimed = claiming.claim_due_step(session, team["intro"], utcnow())
        assert claimed is not None
        message_id = claimed.message_id
    assert enrollment(team["intro"]).steps_sent == 0

    deliver_inbound(soft_bounce(original_message(message_id), SENDER, PROSPECT))

    after = enrollment(team["intro"])
    assert (after.state, after.next_step, after.steps_sent) == ("active", 0, 0)


@pytest.mark.usefixtures("retry_after_ten_minutes")
def test_a_failure_notice_naming_no_address_is_retried_not_taken_for_a_dead_address(
    team: dict[str, int],
) -> None:
    sent_id, _ = send_step(team["intro"])

    outcome = deliver_inbound(unreadable_failure(message_id_of(sent_id)))

    assert (outcome.status, outcome.kind) == ("recorded", "soft_bounce")
    data = event(outcome.event_id).data
    assert (data["reason"], data["status"], data["bounce"]) == ("undefined", "", [])
    retried = enrollment(team["intro"])
    assert (retried.state, retried.next_step) == ("active", 0)
    assert history(team["intro"])[-1].reason == retry_reason("undefined", team["intro"])
    assert prospect().undeliverable_at is None


def test_giving_up_after_soft_bounces_owes_a_task_and_the_history_names_the_last_bounce(
    team: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_SOFT_BOUNCE_LIMIT", "2")
    get_settings.cache_clear()
    _, original = send_step(team["intro"])
    deliver_inbound(soft_bounce(original, SENDER, PROSPECT))
    make_due(team["intro"])
    sent_id, again = send_step(team["intro"])

    outcome = deliver_inbound(soft_bounce(again, SENDER, PROSPECT))

    reason = f"2 soft bounces in 7 days; last {MAILBOX_FULL}"
    for name in ("intro", "webinar"):
        last = history(team[name])[-1]
        assert (last.to_state, last.reason, last.event_id) == ("bounced", reason, outcome.event_id)
    task = owed("task_bounce")
    assert outcome.event_id is not None
    assert task.key == natural_key("task", "task_bounce", outcome.event_id)
    assert task.event_id == outcome.event_id
    with session_scope() as session:
        sent = session.get_one(SentMessage, sent_id)
        subject, message_id = sent.subject, sent.message_id
    assert task.payload["subject"] == f"Email bounced: {subject}"
    assert task.payload["description"] == (
        f"Email bounced: {reason}\nEmail: {subject}\nTo: {PROSPECT}\nMessage-ID: {message_id}"
    )


# --- which address a report is about ----------------------------------------------------


def test_the_prospects_own_entry_decides_when_a_report_names_other_addresses_too(
    team: dict[str, int],
) -> None:
    """Dana's server first says it is still trying; then Dana's mailbox is full, while the
    address it also forwards to does not exist: Dana's address is not dead."""
    _, original = send_step(team["intro"])
    scheduled = enrollment(team["intro"])
    delayed = deliver_inbound(
        report_naming(
            original, [(PROSPECT, "delayed", "4.4.1", "connect to mx.acme.test: timed out")]
        )
    )
    assert delayed.kind == "delayed"
    assert bounced_addresses(delayed.event_id) == [PROSPECT]
    assert enrollment(team["intro"]).next_step_at == scheduled.next_step_at

    failed = deliver_inbound(
        report_naming(
            original,
            [
                (FORWARDED_TO, "failed", "5.1.1", "550 5.1.1 User unknown"),
                (PROSPECT, "failed", "5.2.2", "552 5.2.2 Mailbox full"),
            ],
        )
    )

    assert failed.kind == "soft_bounce"
    assert event(failed.event_id).data["recipient"] == PROSPECT
    assert bounced_addresses(failed.event_id) == [FORWARDED_TO, PROSPECT]
    assert prospect().undeliverable_at is None
    assert enrollment(team["webinar"]).state == "active"
    assert (enrollment(team["intro"]).state, enrollment(team["intro"]).next_step) == ("active", 0)


def test_a_report_about_the_address_dana_forwards_to_is_about_dana(
    team: dict[str, int],
) -> None:
    _, original = send_step(team["intro"])

    outcome = deliver_inbound(
        report_naming(original, [(FORWARDED_TO, "failed", "5.1.1", "550 5.1.1 User unknown")])
    )

    assert outcome.kind == "bounce"
    assert prospect().undeliverable_at is not None
    for name in ("intro", "webinar"):
        assert enrollment(team[name]).state == "bounced"


# --- the prospect, not everybody ----------------------------------------------------------


def test_a_hard_bounce_stops_only_this_prospect_and_a_later_report_keeps_the_first_date(
    team: dict[str, int],
) -> None:
    lee = add_sequence(team, "lee", steps=2, email="lee@globex.test")
    _, original = send_step(team["intro"])

    outcome = deliver_inbound(hard_bounce(original, SENDER, PROSPECT))

    assert bounced_addresses(outcome.event_id) == [PROSPECT]
    marked = prospect().undeliverable_at
    assert marked is not None
    assert enrollment(lee).state == "active"
    with session_scope() as session:
        other = session.scalars(select(Prospect).where(Prospect.email == "lee@globex.test")).one()
        assert other.undeliverable_at is None

    # A second server's report about the same message (its own Message-ID): a new event,
    # but the address has been undeliverable since the first.
    assert deliver_inbound(hard_bounce(original, SENDER, PROSPECT)).status == "recorded"
    assert prospect().undeliverable_at == marked


def test_a_complaint_says_its_feedback_type_and_opts_out_only_this_prospect(
    team: dict[str, int],
) -> None:
    lee = add_sequence(team, "lee", steps=2, email="lee@globex.test")
    sent_id, original = send_step(team["intro"])
    fraud = arf_complaint(original, SENDER, PROSPECT).replace(
        b"Feedback-Type: abuse", b"Feedback-Type: fraud"
    )

    outcome = deliver_inbound(fraud)

    assert event(outcome.event_id).data["feedback_type"] == "fraud"
    assert enrollment(team["intro"]).state_reason == (
        "spam complaint (fraud) via fbl@feedback.mailprovider.test"
    )
    opted_out = prospect().opted_out_at
    assert opted_out is not None
    assert enrollment(lee).state == "active"
    with session_scope() as session:
        other = session.scalars(select(Prospect).where(Prospect.email == "lee@globex.test")).one()
        assert other.opted_out_at is None

    # Asking to be removed later changes nothing: opted out since the complaint.
    remove_me = person_reply(message_id_of(sent_id), PROSPECT, SENDER, "Please remove me.\n")
    assert deliver_inbound(remove_me).kind == "reply"
    assert prospect().opted_out_at == opted_out


# --- replies ------------------------------------------------------------------------------


def test_a_reply_ends_the_sequence_with_no_next_step_and_remove_me_names_the_reply(
    team: dict[str, int],
) -> None:
    sent_id, _ = send_step(team["intro"])
    assert enrollment(team["intro"]).next_step_at is not None
    message_id = message_id_of(sent_id)

    reply = deliver_inbound(person_reply(message_id, PROSPECT, SENDER, "Sounds good, call me.\n"))

    replied = enrollment(team["intro"])
    assert (replied.state, replied.next_step_at) == ("replied", None)
    assert history(team["intro"])[-1].event_id == reply.event_id

    remove_me = deliver_inbound(
        person_reply(message_id, PROSPECT, SENDER, "Please remove me from your list.\n")
    )
    last = history(team["webinar"])[-1]
    assert (last.to_state, last.reason, last.event_id) == (
        "opted_out",
        f"asked to be removed ({PROSPECT})",
        remove_me.event_id,
    )


# --- out of office ----------------------------------------------------------------------------


def test_an_out_of_office_pause_says_why_and_until_when_and_a_return_today_is_not_a_past_morning(
    team: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_AUTO_REPLY_PAUSE_SECONDS", str(2 * 86400))
    get_settings.cache_clear()
    intro_id, _ = send_step(team["intro"])
    webinar_id, _ = send_step(team["webinar"])

    undated = out_of_office_until(intro_id, None)
    paused = enrollment(team["intro"])
    assert paused.resume_at is not None
    last = history(team["intro"])[-1]
    assert (last.to_state, last.event_id) == ("paused", undated)
    assert last.reason == (
        f"auto-reply from {PROSPECT} (no return date); "
        f"resumes {paused.resume_at:%Y-%m-%d %H:%M} UTC"
    )

    before = utcnow()
    out_of_office_until(webinar_id, utcnow().date())  # "back today": the default pause
    resume = enrollment(team["webinar"]).resume_at
    assert resume is not None
    assert before + timedelta(days=2) <= resume <= utcnow() + timedelta(days=2)


def test_a_later_out_of_office_extends_the_pause_and_an_earlier_date_never_shortens_it(
    team: dict[str, int],
) -> None:
    intro_id, _ = send_step(team["intro"])
    webinar_id, _ = send_step(team["webinar"])
    out_of_office_until(intro_id, in_days(5))
    out_of_office_until(webinar_id, in_days(5))
    assert enrollment(team["intro"]).resume_at == morning(in_days(5))

    out_of_office_until(intro_id, in_days(12))  # "I'm away longer than I said"
    assert enrollment(team["intro"]).resume_at == morning(in_days(12))
    assert enrollment(team["webinar"]).resume_at == morning(in_days(5))

    out_of_office_until(intro_id, in_days(8))
    after = enrollment(team["intro"])
    assert (after.state, after.resume_at) == ("paused", morning(in_days(12)))


# --- how long a pause may last -------------------------------------------------------------


def test_no_out_of_office_pauses_longer_than_the_longest_pause(
    team: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misread year ("back 2072") must not silence a prospect for ever."""
    monkeypatch.setenv("SIGHTLINE_AUTO_REPLY_MAX_PAUSE_DAYS", "3")
    monkeypatch.setenv("SIGHTLINE_AUTO_REPLY_PAUSE_SECONDS", str(5 * 86400))
    get_settings.cache_clear()
    intro_id, _ = send_step(team["intro"])
    webinar_id, _ = send_step(team["webinar"])

    before = utcnow()
    out_of_office_until(intro_id, in_days(10))
    out_of_office_until(webinar_id, None)

    for name in ("intro", "webinar"):
        resume = enrollment(team[name]).resume_at
        assert resume is not None
        assert before + timedelta(days=3) <= resume <= utcnow() + timedelta(days=3), name
