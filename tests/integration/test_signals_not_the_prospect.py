"""Answers that are not the prospect's: recorded, and the sequence goes on.

A success notice whatever its Action word, a teammate on reply-all (a user of
the team, a mailbox of the team, or an address at the team's domain), a
teammate's out-of-office, a helpdesk's "we received your message" and a read
receipt all name our message. None of them is the prospect answering: each is
recorded as an event on the real path (`handle_inbound` → classify → match →
signal → rule), the enrolment keeps its next step, and no soft bounce re-sends
a step that arrived.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from core.db import session_scope
from core.models import User
from tests.integration.test_signals import (
    PROSPECT,
    SENDER,
    _dsn,
    deliver_inbound,
    enrollment,
    events,
    out_of_office,
    outbox_kinds,
    person_reply,
    send_step,
    team,  # noqa: F401 - the fixture
)
from web.app.timeline import describe

pytestmark = pytest.mark.integration


def success_notice(original: bytes, sender: str, recipient: str, action: str) -> bytes:
    """A DSN reporting delivery, with an Action word of the MTA's own."""
    return _dsn(
        original,
        sender=sender,
        recipient=recipient,
        action=action,
        status="2.0.0",
        diagnostic="250 2.0.0 Ok: queued as 7C2B11A0F3",
        human="Your message was successfully delivered to the destination(s)\nlisted below.",
        subject="Successful Mail Delivery Report",
    )


def acknowledgement(message_id: str, author: str, sender: str) -> bytes:
    """A helpdesk's receipt: no auto-reply header, a ticket number, "we received"."""
    msg = EmailMessage()
    msg["From"] = author
    msg["To"] = sender
    msg["Subject"] = "[Request #48213] Re: Hello Dana"
    msg["Message-ID"] = make_msgid(domain=author.rpartition("@")[2])
    msg["In-Reply-To"] = message_id
    msg["References"] = message_id
    msg.set_content(
        "Hello,\n\nThank you for contacting Acme Support. We have received your request "
        "and a member of our team will respond within 2 business days.\n\n"
        "Your ticket number is 48213.\n\nAcme Support"
    )
    return msg.as_bytes()


def unchanged(enrollment_id: int, before: tuple[str, int, object]) -> None:
    after = enrollment(enrollment_id)
    assert (after.state, after.next_step, after.next_step_at) == before


def snapshot(enrollment_id: int) -> tuple[str, int, object]:
    found = enrollment(enrollment_id)
    return (found.state, found.next_step, found.next_step_at)


@pytest.mark.parametrize("action", ["deliverable", "delivered", "succeeded", ""])
def test_a_success_notice_is_other_whatever_its_action_word(
    team: dict[str, int],  # noqa: F811 - the fixture
    action: str,
) -> None:
    _, original = send_step(team["intro"])
    before = snapshot(team["intro"])

    outcome = deliver_inbound(success_notice(original, SENDER, PROSPECT, action))

    assert (outcome.status, outcome.kind) == ("recorded", "other")
    [event] = events("other")
    assert event.data["note"] == "delivered"
    assert describe(event, None, None).label == "Delivery confirmed (a success notice)"
    unchanged(team["intro"], before)
    assert events("soft_bounce") == [] and events("bounce") == []
    assert outbox_kinds() == ["task_sent"]


@pytest.mark.parametrize(
    "author",
    [
        "manager@seller.test",  # at the team's domain
        "Coach@Seller.Test",  # the same, as a mail client may case it
    ],
)
def test_a_teammate_on_reply_all_is_recorded_and_halts_nothing(
    team: dict[str, int],  # noqa: F811 - the fixture
    author: str,
) -> None:
    _, original = send_step(team["intro"])
    message_id = _message_id(original)
    before = snapshot(team["intro"])

    reply = person_reply(message_id, author, SENDER, "Let me know how it goes, Dana!")
    outcome = deliver_inbound(reply)

    assert (outcome.status, outcome.kind) == ("recorded", "teammate_reply")
    unchanged(team["intro"], before)
    assert events("reply") == []
    assert outbox_kinds() == ["task_sent"]
    [event] = events("teammate_reply")
    shown = describe(event, None, None)
    assert shown.label == "A teammate answered (not the prospect; nothing halted)"
    assert shown.detail == f"from {author.lower()}"
    # The prospect's own answer afterwards still halts the sequence.
    outcome = deliver_inbound(person_reply(message_id, PROSPECT, SENDER, "Yes, Tuesday."))
    assert (outcome.status, outcome.kind) == ("recorded", "reply")
    assert enrollment(team["intro"]).state == "replied"


def test_a_teammate_is_a_user_of_the_team_at_any_domain(
    team: dict[str, int],  # noqa: F811 - the fixture
) -> None:
    with session_scope() as session:
        session.add(User(team_id=team["team"], email="lee.manager@gmail.com", name="Lee"))
    _, original = send_step(team["intro"])
    before = snapshot(team["intro"])

    reply = person_reply(_message_id(original), "lee.manager@gmail.com", SENDER, "Nice one")
    outcome = deliver_inbound(reply)

    assert (outcome.status, outcome.kind) == ("recorded", "teammate_reply")
    unchanged(team["intro"], before)


def test_someone_else_at_a_free_mail_domain_of_a_teammate_is_not_a_teammate(
    team: dict[str, int],  # noqa: F811 - the fixture
) -> None:
    with session_scope() as session:
        session.add(User(team_id=team["team"], email="lee.manager@gmail.com", name="Lee"))
    _, original = send_step(team["intro"])

    reply = person_reply(_message_id(original), "dana.private@gmail.com", SENDER, "Call me")
    outcome = deliver_inbound(reply)

    assert (outcome.status, outcome.kind) == ("recorded", "reply")
    assert enrollment(team["intro"]).state == "replied"


def test_a_teammate_s_out_of_office_pauses_nothing(
    team: dict[str, int],  # noqa: F811 - the fixture
) -> None:
    _, original = send_step(team["intro"])
    before = snapshot(team["intro"])

    ooo = out_of_office(_message_id(original), "manager@seller.test", SENDER, "I am away.")
    outcome = deliver_inbound(ooo)

    assert (outcome.status, outcome.kind) == ("recorded", "teammate_reply")
    unchanged(team["intro"], before)


def test_a_helpdesk_acknowledgement_is_an_auto_reply_that_pauses_nothing(
    team: dict[str, int],  # noqa: F811 - the fixture
) -> None:
    _, original = send_step(team["intro"])
    before = snapshot(team["intro"])

    outcome = deliver_inbound(acknowledgement(_message_id(original), "help@acme.test", SENDER))

    assert (outcome.status, outcome.kind) == ("recorded", "auto_reply")
    [event] = events("auto_reply")
    assert event.data["acknowledgement"] is True
    unchanged(team["intro"], before)
    assert events("reply") == []


def _message_id(raw: bytes) -> str:
    for line in raw.decode().splitlines():
        if line.lower().startswith("message-id:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Message-ID")
