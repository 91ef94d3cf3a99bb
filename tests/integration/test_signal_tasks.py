"""What a bounce or a complaint leaves behind: the Task a sales team reads, the history's cause.

Found by mutation testing (`make mutation`): test_signals checked that a bounce
or a complaint owes *a* Task (by kind) and stops the enrolments, and passed as
well when the Task's subject, description, Message-ID or key were dropped or
garbled (`rules._owe_task`), or when the enrolments' history lost the event
that stopped them (`event_id=None` to `_stop_all`, `_opt_out`). The Task is
what the rep sees on the Contact in Salesforce, and the history is how a
person finds out why a sequence stopped.
"""

from __future__ import annotations

from sqlalchemy import select

from core.db import session_scope
from core.events import natural_key
from core.models import EnrollmentTransition, SalesforceOutbox, SentMessage
from tests.integration.test_signals import (
    PROSPECT,
    SENDER,
    arf_complaint,
    deliver_inbound,
    events,
    hard_bounce,
    send_step,
    team,
)

__all__ = ["team"]  # the fixture, shared with test_signals


def owed(kind: str) -> SalesforceOutbox:
    with session_scope() as session:
        row = session.scalars(select(SalesforceOutbox).where(SalesforceOutbox.kind == kind)).one()
        session.expunge(row)
        return row


def stopped_by(enrollment_id: int, to_state: str) -> int | None:
    """The event recorded as the cause of the enrolment's move to `to_state`."""
    with session_scope() as session:
        return session.scalars(
            select(EnrollmentTransition.event_id).where(
                EnrollmentTransition.enrollment_id == enrollment_id,
                EnrollmentTransition.to_state == to_state,
            )
        ).one()


def sent_message(sent_id: int) -> tuple[str, str]:
    with session_scope() as session:
        sent = session.get_one(SentMessage, sent_id)
        return sent.subject, sent.message_id


def test_a_hard_bounce_owes_a_task_saying_so_and_the_history_names_the_bounce(
    team: dict[str, int],
) -> None:
    sent_id, original = send_step(team["intro"])
    subject, message_id = sent_message(sent_id)

    deliver_inbound(hard_bounce(original, SENDER, PROSPECT), "uid-1")

    [event] = events("bounce")
    task = owed("task_bounce")
    assert task.key == natural_key("task", "task_bounce", event.id)
    assert task.who_email == PROSPECT
    assert task.payload["subject"] == f"Email bounced: {subject}"
    assert task.payload["message_id"] == message_id
    reason = f"hard bounce 5.1.1 userunknown ({PROSPECT})"
    assert task.payload["description"] == (
        f"Email bounced: {reason}\nEmail: {subject}\nTo: {PROSPECT}\nMessage-ID: {message_id}"
    )
    assert task.payload["activity_date"]
    for name in ("intro", "webinar"):
        assert stopped_by(team[name], "bounced") == event.id


def test_a_complaint_owes_a_task_saying_so_and_the_history_names_the_complaint(
    team: dict[str, int],
) -> None:
    sent_id, original = send_step(team["intro"])
    subject, message_id = sent_message(sent_id)

    deliver_inbound(arf_complaint(original, SENDER, PROSPECT))

    [event] = events("complaint")
    task = owed("task_complaint")
    assert task.key == natural_key("task", "task_complaint", event.id)
    assert task.payload["subject"] == f"Spam complaint: {subject}"
    assert task.payload["message_id"] == message_id
    assert task.payload["description"].startswith(
        "Spam complaint: spam complaint (abuse) via fbl@feedback.mailprovider.test\n"
    )
    for name in ("intro", "webinar"):
        assert stopped_by(team[name], "opted_out") == event.id
