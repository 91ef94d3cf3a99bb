"""What classify says about messages no prospect wrote: success notices,
receipts, calendar traffic, complaints in their variants (signals that must
generalise beyond the fixtures). The fixtures' kinds are checked in
test_classify.py; here, the details the sequence engine acts on."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_signals import _dsn
from worker.matching.classify import classify_message

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "mail"
ORIGINAL = (
    b"From: rep@seller.test\r\nTo: dana@acme.test\r\nSubject: Hello\r\n"
    b"Message-ID: <one@seller.test>\r\n\r\nHi Dana\r\n"
)


def report(action: str, status: str, diagnostic: str = "250 2.0.0 Ok") -> bytes:
    return _dsn(
        ORIGINAL,
        sender="rep@seller.test",
        recipient="dana@acme.test",
        action=action,
        status=status,
        diagnostic=diagnostic,
        human="Delivery report.",
    )


@pytest.mark.parametrize(
    ("action", "status"),
    [
        ("deliverable", "2.0.0"),
        ("delivered", "2.1.5"),
        ("ok", "2.6.0"),
        ("failed", "2.0.0"),  # contradictory: the status decides, nothing is re-sent
        ("", "2.0.0"),
    ],
)
def test_a_two_x_x_status_is_success_whatever_the_action(action: str, status: str) -> None:
    result = classify_message(report(action, status))
    assert (result.kind, result.note, result.bounce_recipients) == ("other", "delivered", ())
    assert result.refers_to == ("<one@seller.test>",)


def test_a_success_without_status_is_read_from_its_diagnostic() -> None:
    raw = report("deliverable", "", "smtp; 250 2.0.0 Ok: queued as 7C2B11A0F3")
    assert classify_message(raw).kind == "other"


def test_every_bounce_recipient_says_whether_it_is_delayed() -> None:
    delayed = classify_message(report("delayed", "4.4.1", "421 4.4.1 Connection timed out"))
    failed = classify_message(report("failed", "5.1.1", "550 5.1.1 User unknown"))
    assert delayed.as_json("d")["bounce"] == {
        "recipients": [
            {"address": "dana@acme.test", "status": "4.4.1", "hard": False, "delayed": True}
        ]
    }
    assert failed.as_json("f")["bounce"] == {
        "recipients": [
            {"address": "dana@acme.test", "status": "5.1.1", "hard": True, "delayed": False}
        ]
    }
    assert delayed.delayed and not failed.delayed


@pytest.mark.parametrize(
    ("name", "complainant"),
    [
        ("complaint-arf-textplain-no-rcpt.eml", "tom@contoso.example"),
        ("complaint-abuse-desk-forward.eml", "jordan@customer-of-host.example"),
        ("complaint-abuse-desk-inline.eml", "sam@isp-mail.example"),
        ("complaint-x-arf.eml", "kim@abuse-network-customer.example"),
    ],
)
def test_complaint_variants_name_who_complained_and_our_message(
    name: str, complainant: str
) -> None:
    result = classify_message((FIXTURES / name).read_bytes())
    assert result.kind == "complaint"
    assert result.complaint is not None
    assert result.complaint.complainant == complainant
    assert result.complaint.original_message_ids == (
        "<sl.7f3a9c.20270302T091500@mail.sightline.example>",
    )


def test_a_bounce_whose_error_says_spam_is_still_a_bounce() -> None:
    raw = report("failed", "5.7.1", "550 5.7.1 Message rejected: reported as spam by users")
    assert classify_message(raw).kind == "bounce"


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("ack-zendesk-en.eml", "acknowledgement"),
        ("ack-noheader-de.eml", "acknowledgement"),
        ("ack-noheader-fr.eml", "acknowledgement"),
        ("ooo-exchange-en.eml", None),
        ("calendar-google-invitation.eml", "calendar"),
        ("calendar-outlook-accepted.eml", "calendar"),
        ("read-receipt-outlook-plain.eml", "read_receipt"),
        ("read-receipt-mdn.eml", "read_receipt"),
        ("success-dsn-deliverable.eml", "delivered"),
        ("newsletter-no-list-headers.eml", "bulk"),
        ("transactional-receipt.eml", "bulk"),
    ],
)
def test_what_kind_of_machine_mail_it_is(name: str, note: str | None) -> None:
    assert classify_message((FIXTURES / name).read_bytes()).note == note


@pytest.mark.parametrize(
    "text",
    [
        "Got your email, let me check with the team and get back to you.",
        "I received your message. Yes, Tuesday at 10 works.",
        "Thanks for reaching out to us! Send me the deck please.",
        "Please unsubscribe me, and view this in your browser is broken anyway",
    ],
)
def test_a_person_who_mentions_receiving_is_still_a_person(text: str) -> None:
    raw = (
        "From: Dana <dana@acme.test>\r\nTo: rep@seller.test\r\nSubject: Re: Hello\r\n"
        "Message-ID: <two@acme.test>\r\nIn-Reply-To: <one@seller.test>\r\n\r\n"
        f"{text}\r\n"
    ).encode()
    assert classify_message(raw).kind == "reply"


def test_an_outlook_delivery_receipt_in_plain_text_is_other() -> None:
    raw = (
        b"From: Microsoft Outlook <postmaster@contoso.example>\r\nTo: rep@seller.test\r\n"
        b"Subject: Delivered: Hello Dana\r\nMessage-ID: <d@contoso.example>\r\n"
        b"In-Reply-To: <one@seller.test>\r\nContent-Type: text/plain\r\n\r\n"
        b"Your message has been delivered to the following recipients:\r\n\r\n"
        b"Dana (dana@contoso.example)\r\n\r\nSubject: Hello Dana\r\n"
    )
    result = classify_message(raw)
    assert (result.kind, result.refers_to) == ("other", ("<one@seller.test>",))


@pytest.mark.parametrize(
    "header",
    [
        "X-MC-Unique: 5Vz3mXgYN2aLr8hFZcEw",  # Mimecast stamps every message it passes
        "X-Pm-Message-Id: XfE3m1vC2bQ==",  # Proton Mail, a person's own client
        "X-SES-Outgoing: 2027.03.03-54.240.8.1",  # Amazon WorkMail leaves through SES
        "Feedback-ID: 1.us-east-1.abc:AmazonSES",
    ],
)
def test_a_person_s_fresh_message_through_a_gateway_is_still_a_reply(header: str) -> None:
    raw = (
        "From: Dana <dana@acme.test>\r\nTo: rep@seller.test\r\nSubject: your message\r\n"
        f"Message-ID: <z@acme.test>\r\n{header}\r\n\r\nHi, yes let's talk on Friday.\r\n"
    ).encode()
    assert classify_message(raw).kind == "reply"
