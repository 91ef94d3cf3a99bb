"""Pausing, resuming and finishing an enrolment by hand: what the enrolment page,
the add-ons' panel and the API share.

Each is one conditional UPDATE through `worker.sequences.enrolling.transition`
(the same the workers use), so a reply recorded at the same moment wins or
loses cleanly, and the history says who did it::

    active ──pause──▶ paused ──resume──▶ active (the next step goes out now, or
      │                  │                 at its time if that is still ahead)
      └──finish──────────┴──────────────▶ finished (no further step)

The caller commits. Each returns False when the enrolment was not in a state
the action leaves (another process, or a person, got there first).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Enrollment, EnrollmentState, utcnow
from worker.sequences.enrolling import transition

Action = Literal["pause", "resume", "finish"]
ACTIONS: tuple[Action, ...] = ("pause", "resume", "finish")
# What each action may leave: the pages offer an action only from these states.
FROM_STATES: dict[Action, frozenset[str]] = {
    "pause": frozenset({EnrollmentState.ACTIVE}),
    "resume": frozenset({EnrollmentState.PAUSED}),
    "finish": frozenset({EnrollmentState.ACTIVE, EnrollmentState.PAUSED}),
}


def change_by_hand(
    session: Session, enrollment_id: int, action: Action, who: str, now: datetime | None = None
) -> bool:
    """Apply `action` to the enrolment on behalf of `who` (an address, for its history)."""
    now = now or utcnow()
    if action == "pause":
        return transition(
            session,
            enrollment_id,
            EnrollmentState.PAUSED,
            f"paused by {who}",
            from_states=FROM_STATES[action],
            now=now,
            resume_at=None,
        )
    if action == "resume":
        # A step not yet due keeps its time; one that was due (or held) goes out now.
        due = session.scalar(select(Enrollment.next_step_at).where(Enrollment.id == enrollment_id))
        return transition(
            session,
            enrollment_id,
            EnrollmentState.ACTIVE,
            f"resumed by {who}",
            from_states=FROM_STATES[action],
            now=now,
            resume_at=None,
            next_step_at=due if due is not None and due > now else now,
        )
    if action == "finish":
        return transition(
            session,
            enrollment_id,
            EnrollmentState.FINISHED,
            f"finished by {who}",
            from_states=FROM_STATES[action],
            now=now,
            next_step_at=None,
            resume_at=None,
        )
    raise ValueError(f"unknown action {action!r}")
