"""Changing a sequence's steps once it exists: what the sequence pages and the API share.

History stays true: a step that went out to anyone is never removed, and the
order of steps is fixed once any of them went out (an enrolment's `next_step`
is a position: moving steps under it would send the wrong one). A sequence is
deleted only while nobody was ever enrolled in it: deleting it would delete
their enrolments, and their history with them.

Each function returns None when done, else the refusal as a sentence; the
caller commits, or rolls back on a refusal.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import Enrollment, SentMessage, Sequence, SequenceStep


def sent_count(session: Session, sequence: Sequence, position: int | None = None) -> int:
    """How many messages the sequence sent (of the step at `position`, if given)."""
    query = (
        select(func.count())
        .select_from(SentMessage)
        .join(Enrollment, Enrollment.id == SentMessage.enrollment_id)
        .where(Enrollment.sequence_id == sequence.id)
    )
    if position is not None:
        query = query.where(SentMessage.step_position == position)
    return int(session.scalar(query) or 0)


def remove_last_step(session: Session, sequence: Sequence, step: SequenceStep) -> str | None:
    """Remove `step` if it is the last one and nobody received it."""
    number = step.position + 1
    if step.position != len(sequence.steps) - 1:
        return f"Step {number}: only the last step can be removed."
    if sent_count(session, sequence, step.position):
        return f"Step {number} was already sent to someone: it stays, so history stays true."
    sequence.steps.remove(step)
    session.flush()
    return None


def reorder_steps(session: Session, sequence: Sequence, order: list[int]) -> str | None:
    """Put the steps in `order` (their current positions, each once) while none was sent."""
    if sorted(order) != list(range(len(sequence.steps))):
        return (
            f"order: list each of the {len(sequence.steps)} steps' positions "
            f"(0 to {len(sequence.steps) - 1}) once"
        )
    if sent_count(session, sequence):
        return "The sequence already sent steps: their order is part of its history now."
    by_position = {s.position: s for s in sequence.steps}
    moved = [by_position[p] for p in order]
    if moved[0].same_thread:
        return "order: the first step cannot reply in a thread (it has no thread yet)."
    if any(not s.same_thread and not s.subject for s in moved):
        return "order: a step without a subject must reply in the thread of the one before."
    # (sequence_id, position) is unique, checked row by row: step aside first.
    for index, step in enumerate(moved):
        step.position = -1 - index
    session.flush()
    for index, step in enumerate(moved):
        step.position = index
    session.flush()
    session.expire(sequence, ["steps"])
    return None


def delete_sequence(session: Session, sequence: Sequence) -> str | None:
    """Delete the sequence (its steps go with it) if nobody was ever enrolled in it."""
    enrolled = session.scalar(
        select(func.count()).select_from(Enrollment).where(Enrollment.sequence_id == sequence.id)
    )
    if enrolled:
        return (
            f"{sequence.name} has {enrolled} enrolment(s): finish them instead; deleting would "
            "delete their history."
        )
    session.delete(sequence)
    session.flush()
    return None


def save_step(
    session: Session,
    sequence: Sequence,
    step: SequenceStep | None,
    *,
    delay_seconds: int,
    subject: str,
    body_html: str,
    same_thread: bool,
) -> SequenceStep:
    """Add a step at the end (`step` None) or overwrite one, with checked values.

    The first step never replies in a thread: it has none yet.
    """
    if step is None:
        step = SequenceStep(
            sequence_id=sequence.id, position=len(sequence.steps), subject="", body_html=""
        )
        sequence.steps.append(step)
    step.delay_seconds, step.subject, step.body_html = delay_seconds, subject, body_html
    step.same_thread = same_thread and step.position > 0
    session.flush()
    return step
