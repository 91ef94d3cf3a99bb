"""Values a step needs and nobody has filled in: who is asked, the warning, the resume.

A step's placeholder with no value and no fallback is never sent
(`core.templates`); the claim pauses the enrolment instead
(`worker.sequences.claiming`). Who can fill the value in decides what happens:

    the prospect lacks it  (company, first name)  → "fill it in on the prospect",
                                                    then a person resumes it
    the sender lacks it    (their name, signature) → "add your name on your Account
                                                    page (/account)"; marked
                                                    `waits_for_sender` and resumed
                                                    by `resume_for_sender` when the
                                                    sender saves what was missing

An enrolment is resumed by itself only when *everything* missing was the
sender's: a prospect's gap needs a person's eyes (a fallback may be better), so
an enrolment missing both waits for a hand after the sender has filled theirs in.

Enrolling warns before anything waits: `enrolment_warnings` is what the CSV
import's preview, the one-prospect form and the API say about a sequence whose
steps need a value the sender or the prospect lacks.

Never sends and never commits: the caller does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import (
    Enrollment,
    EnrollmentState,
    Mailbox,
    Prospect,
    Sequence,
    SequenceStep,
)
from core.templates import SENDER_PLACEHOLDERS, render_all, used_placeholders, values_for
from worker.sequences.enrolling import transition
from worker.sequences.messages import Sender, mailbox_sender
from worker.sequences.render import placeholder_values

log = logging.getLogger(__name__)

ACCOUNT_PATH = "/account"
# What the sender is asked to add for each of their values ("your …": the Account
# page speaks to them); sender_email is the mailbox's own address, never missing.
SENDER_ASKS = {
    "sender_name": "your name",
    "sender_first_name": "your name",
    "signature": "your signature",
}


def _braces(names: Iterable[str]) -> str:
    return ", ".join(n if n.startswith("{{") else f"{{{{{n}}}}}" for n in names)


def _asks(for_sender: Iterable[str]) -> str:
    return " and ".join(sorted({SENDER_ASKS.get(name, "your name") for name in for_sender}))


def missing_values_reason(position: int, for_sender: list[str], for_prospect: list[str]) -> str:
    """Why step `position` waits, saying who must fill in what, and where."""
    step = f"step {position + 1}"
    on_prospect = (
        f"a value for {_braces(for_prospect)}: fill it in on the prospect (or give the "
        "placeholder a fallback, e.g. {{first_name|there}}), then resume"
    )
    if not for_sender:
        return f"{step} needs {on_prospect}"
    asked = f"add {_asks(for_sender)} on your Account page ({ACCOUNT_PATH})"
    if not for_prospect:
        return (
            f"{step} needs {_braces(for_sender)} from the sender: {asked}; "
            "it resumes by itself once you do"
        )
    return f"{step} needs {_braces(for_sender)} from the sender ({asked}) and {on_prospect}"


# -- before enrolling ----------------------------------------------------------------------


def needed_values(steps: Iterable[SequenceStep]) -> list[tuple[int, str]]:
    """(position, name) of the first step needing each placeholder that has no fallback."""
    needs: dict[str, int] = {}
    for step in steps:
        for text, is_html in ((step.subject, False), (step.body_html, True)):
            for name, has_fallback in used_placeholders(text, html_mode=is_html):
                if not has_fallback:
                    needs.setdefault(name, step.position)
    return sorted(((position, name) for name, position in needs.items()), key=lambda n: n[0])


def sender_warning(session: Session, sequence: Sequence) -> str | None:
    """What the sequence's sender lacks that its steps need, as one sentence, or None."""
    needs = [(p, n) for p, n in needed_values(sequence.steps) if n in SENDER_PLACEHOLDERS]
    if not needs:
        return None
    mailbox = session.get_one(Mailbox, sequence.mailbox_id)
    sender = mailbox_sender(session, mailbox)
    values = values_for(
        None, sender_email=mailbox.email, sender_name=sender.name, sender_signature=sender.signature
    )
    missing = [(p, n) for p, n in needs if not values.get(n)]
    if not missing:
        return None
    lacks = " and ".join(sorted({SENDER_ASKS.get(n, "your name")[5:] for _, n in missing}))
    return (
        f"The sender ({mailbox.email}) has no {lacks} yet, which step "
        f"{missing[0][0] + 1} uses ({_braces(n for _, n in missing)}): every enrolment will "
        f"wait, paused, at that step until they add it on their Account page ({ACCOUNT_PATH}); "
        "then it goes on by itself."
    )


def prospect_warning(
    needs: list[tuple[int, str]], person: Prospect, team_id: int, *, line: int | None = None
) -> str | None:
    """What `person` lacks that the steps need (the first such value), or None."""
    values = values_for(person, sender_email="-", sender_name="-", team_id=team_id)
    for position, name in needs:
        if name not in SENDER_PLACEHOLDERS and not values.get(name):
            where = f"Line {line}: " if line is not None else ""
            return (
                f"{where}{person.email} has no {name.replace('_', ' ')}; "
                f"they will wait, paused, at step {position + 1} until it is filled in."
            )
    return None


def enrolment_warnings(
    session: Session, sequence: Sequence, person: Prospect | None = None
) -> list[str]:
    """Everything that would make enrolling `person` in `sequence` wait, as sentences."""
    warnings = []
    if (for_sender := sender_warning(session, sequence)) is not None:
        warnings.append(for_sender)
    if person is not None:
        needs = needed_values(sequence.steps)
        if (for_person := prospect_warning(needs, person, sequence.team_id)) is not None:
            warnings.append(for_person)
    return warnings


# -- after the sender filled their values in -----------------------------------------------


def resume_for_sender(session: Session, user_id: int, now: datetime) -> int:
    """Resume enrolments that waited only for `user_id`'s own values, now filled in.

    Each is checked again against its step with today's values: one still
    missing something (the sender cleared their name again, the step changed to
    need a prospect's value) stays paused, its reason brought up to date.
    Returns how many were resumed.
    """
    rows = session.execute(
        select(Enrollment, Sequence, Mailbox)
        .join(Sequence, Sequence.id == Enrollment.sequence_id)
        .join(Mailbox, Mailbox.id == Sequence.mailbox_id)
        .where(
            Mailbox.user_id == user_id,
            Enrollment.state == EnrollmentState.PAUSED,
            Enrollment.waits_for_sender.is_(True),
        )
        .order_by(Enrollment.id)
    ).all()
    resumed = 0
    senders: dict[int, Sender] = {}
    for enrollment, sequence, mailbox in rows:
        sender = senders.setdefault(mailbox.id, mailbox_sender(session, mailbox))
        step = next((s for s in sequence.steps if s.position == enrollment.next_step), None)
        blocked: tuple[str, ...] = ()
        if step is not None:
            prospect = session.get_one(Prospect, enrollment.prospect_id)
            values = placeholder_values(prospect, mailbox, sender.name, sender.signature)
            _, blocked = render_all([(step.subject, False), (step.body_html, True)], values)
        if blocked:
            for_sender = [b for b in blocked if b in SENDER_PLACEHOLDERS]
            for_prospect = [b for b in blocked if b not in SENDER_PLACEHOLDERS]
            enrollment.state_reason = missing_values_reason(
                enrollment.next_step, for_sender, for_prospect
            )
            enrollment.waits_for_sender = not for_prospect
            continue
        if transition(
            session,
            enrollment.id,
            EnrollmentState.ACTIVE,
            "resumed: the sender filled in what the step needed",
            from_states={EnrollmentState.PAUSED},
            now=now,
            next_step_at=now,
            resume_at=None,
        ):
            resumed += 1
    if rows:
        log.info(
            "sender_values_resumed user_id=%s waiting=%s resumed=%s", user_id, len(rows), resumed
        )
    return resumed
