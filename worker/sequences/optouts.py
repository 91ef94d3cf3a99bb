"""The opt-out list: putting an address on it, taking it off, and what that does to sequences.

What the unsubscribe endpoint, the opt-out list page and API, and the inbound
rules (a "remove me" reply, a complaint) all do, in one place::

    opt_out(team, address, reason, source)
        prospect (team, address) found, or made: insert-or-ignore on its natural key
        opted_out_at IS NULL ──conditional UPDATE──▶ opted_out_at, opted_out_reason
            won: an opt_out_changes row "added" (who, when, why)
            lost (already on the list): nothing written, the first reason stays
        every live enrolment of the prospect in the team ──▶ opted_out (transition)

    remove(team, prospect) ──conditional UPDATE──▶ opted_out_at NULL, a row "removed"

Idempotent by construction: the conditional UPDATE decides who records the
change, so a mail client's one-click POST and the person pressing the button
at the same moment leave one "added" row. Enrolments already ended by the
opt-out stay ended when the address is taken off the list again (their states
are final); the address can be enrolled afresh.

Never commits: the caller owns the transaction. Never sends anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.events import insert_ignore
from core.models import (
    Enrollment,
    EnrollmentState,
    OptOutChange,
    OptOutSource,
    Prospect,
)
from worker.sequences.enrolling import transition

log = logging.getLogger(__name__)

LIVE = frozenset({EnrollmentState.ACTIVE, EnrollmentState.PAUSED})
# The subject of List-Unsubscribe's mailto: what a mail client sends the sender.
UNSUBSCRIBE_SUBJECT = "unsubscribe"
REASON_LIMIT = 500


@dataclass(frozen=True)
class OptOutResult:
    prospect_id: int
    added: bool  # False: the address was already on the list
    stopped: int  # live enrolments moved to opted_out


def normalise(email: str) -> str:
    return email.strip().lower()


def opt_out(
    session: Session,
    *,
    team_id: int,
    email: str,
    reason: str,
    source: OptOutSource,
    now: datetime,
    user_id: int | None = None,
    event_id: int | None = None,
) -> OptOutResult:
    """Put `email` on the team's opt-out list and stop its live enrolments."""
    address = normalise(email)
    prospect_id = session.scalar(
        select(Prospect.id).where(Prospect.team_id == team_id, Prospect.email == address)
    )
    if prospect_id is None:
        insert_ignore(
            session,
            Prospect.__table__,  # type: ignore[arg-type]
            {"team_id": team_id, "email": address, "created_at": now},
            ["team_id", "email"],
        )
        prospect_id = session.scalars(
            select(Prospect.id).where(Prospect.team_id == team_id, Prospect.email == address)
        ).one()
    added = mark_opted_out(
        session,
        team_id=team_id,
        prospect_id=int(prospect_id),
        reason=reason,
        source=source,
        now=now,
        user_id=user_id,
    )
    stopped = stop_live(
        session, int(prospect_id), EnrollmentState.OPTED_OUT, reason, event_id=event_id, now=now
    )
    log.info(
        "opted_out team_id=%s prospect_id=%s source=%s added=%s stopped=%s",
        team_id,
        prospect_id,
        source,
        added,
        stopped,
    )
    return OptOutResult(int(prospect_id), added, stopped)


def mark_opted_out(
    session: Session,
    *,
    team_id: int,
    prospect_id: int,
    reason: str,
    source: OptOutSource,
    now: datetime,
    user_id: int | None = None,
) -> bool:
    """Set the prospect's opt-out if it is not set; True if this call set it."""
    reason = reason[:REASON_LIMIT]
    result = session.execute(
        update(Prospect)
        .where(
            Prospect.id == prospect_id,
            Prospect.team_id == team_id,
            Prospect.opted_out_at.is_(None),
        )
        .values(opted_out_at=now, opted_out_reason=reason)
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False  # already on the list: another request got there first
    session.add(
        OptOutChange(
            team_id=team_id,
            prospect_id=prospect_id,
            action="added",
            source=source,
            reason=reason,
            user_id=user_id,
            at=now,
        )
    )
    return True


def remove(
    session: Session,
    *,
    team_id: int,
    prospect_id: int,
    source: OptOutSource,
    now: datetime,
    user_id: int | None,
    reason: str | None = None,
) -> bool:
    """Take the prospect off the list; False if it was not on it (or not the team's)."""
    result = session.execute(
        update(Prospect)
        .where(
            Prospect.id == prospect_id,
            Prospect.team_id == team_id,
            Prospect.opted_out_at.is_not(None),
        )
        .values(opted_out_at=None, opted_out_reason=None)
        .execution_options(synchronize_session="fetch")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(
        OptOutChange(
            team_id=team_id,
            prospect_id=prospect_id,
            action="removed",
            source=source,
            reason=(reason or None) and reason[:REASON_LIMIT],
            user_id=user_id,
            at=now,
        )
    )
    log.info("opt_out_removed team_id=%s prospect_id=%s", team_id, prospect_id)
    return True


def stop_live(
    session: Session,
    prospect_id: int,
    to_state: EnrollmentState,
    reason: str,
    *,
    event_id: int | None,
    now: datetime,
    also: int | None = None,
) -> int:
    """Every live enrolment of the prospect (team-wide, any sequence) to `to_state`.

    `also` is one more enrolment to try (a finished one re-opened for a retry).
    Returns how many moved.
    """
    ids = [
        int(i)
        for i in session.scalars(
            select(Enrollment.id).where(
                Enrollment.prospect_id == prospect_id, Enrollment.state.in_(list(LIVE))
            )
        )
    ]
    if also is not None and also not in ids:
        ids.append(also)
    moved = 0
    for enrollment_id in ids:
        moved += transition(
            session,
            enrollment_id,
            to_state,
            reason,
            from_states=LIVE,
            event_id=event_id,
            now=now,
            next_step_at=None,
        )
    return moved
