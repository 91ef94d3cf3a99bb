"""Enrolments: putting people in a sequence, and moving an enrolment from state to state.

What the web app (enrol, CSV import, pause, resume, finish by hand) and the
workers (a reply ends an enrolment, a date resumes one) both do to enrolments.
Every state change goes through `transition` (or `transition_many`, the same for
a batch), one conditional UPDATE that records its reason, so two changes racing
for the same enrolment (a person pausing while a reply lands) leave one winner
and an honest history::

    new ──enrol──▶ active ──pause──▶ paused ──resume──▶ active
                     │                  │
                     ├──reply, bounce…──┴──▶ replied, bounced, … (final)
                     └──finish, last step sent──▶ finished (final)

Must never: enrol an opted-out, undeliverable or erased (`core.erasure`) person, or the same
prospect twice in one sequence; change a state behind `transition`'s back.
Never commits: the caller owns the transaction. Never sends anything.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from core.erasure import ERASED_MESSAGE, erased_addresses, is_erased
from core.models import (
    FINAL_STATES,
    Enrollment,
    EnrollmentState,
    EnrollmentTransition,
    Prospect,
    Sequence,
    utcnow,
)
from core.zones.inference import from_domain
from worker.sequences.send_windows import learn_zone, zone_columns

log = logging.getLogger(__name__)


class EnrollmentError(ValueError):
    """An enrolment request that cannot be honoured (the message says why)."""


def enroll(
    session: Session, *, sequence: Sequence, email: str, name: str | None, now: datetime
) -> Enrollment:
    """Enrol `email` in `sequence`, creating the prospect if new.

    Raises:
        EnrollmentError: the sequence has no steps, the person was erased (nothing
            is stored then), the prospect opted out or is undeliverable, or is
            already enrolled in this sequence.
    """
    email = email.strip().lower()
    if not sequence.steps:
        raise EnrollmentError("sequence has no steps")
    if is_erased(session, sequence.team_id, email):
        raise EnrollmentError(f"{email}: {ERASED_MESSAGE}")
    prospect = session.scalar(
        select(Prospect).where(Prospect.team_id == sequence.team_id, Prospect.email == email)
    )
    if prospect is None:
        prospect = Prospect(team_id=sequence.team_id, email=email, name=name)
        learn_zone(prospect, from_domain(email))
        session.add(prospect)
        session.flush()
    elif name and not prospect.name:
        prospect.name = name
    _check_enrollable(prospect)
    existing = session.scalar(
        select(Enrollment).where(
            Enrollment.sequence_id == sequence.id, Enrollment.prospect_id == prospect.id
        )
    )
    if existing is not None:
        raise EnrollmentError(f"{email} is already enrolled in this sequence (#{existing.id})")
    enrollment = Enrollment(
        team_id=sequence.team_id,
        sequence_id=sequence.id,
        prospect_id=prospect.id,
        state=EnrollmentState.ACTIVE,
        state_reason="enrolled",
        state_changed_at=now,
        next_step=0,
        next_step_at=now + timedelta(seconds=sequence.steps[0].delay_seconds),
        steps_sent=0,
        created_at=now,
    )
    session.add(enrollment)
    session.flush()
    session.add(
        EnrollmentTransition(
            enrollment_id=enrollment.id,
            from_state="new",
            to_state="active",
            reason="enrolled",
            at=now,
        )
    )
    return enrollment


def enroll_many(
    session: Session,
    *,
    sequence: Sequence,
    people: list[tuple[str, str | None, str | None]],
    now: datetime,
) -> int:
    """Enrol (email, name, company) people in `sequence` at once: a CSV import.

    The same rules as `enroll`, in a few statements rather than a few per person,
    all in the caller's transaction: all of them are enrolled, or (an error) none.
    New prospects are created; known ones keep their name and company, blanks
    filled in. Returns how many were enrolled.

    Raises:
        EnrollmentError: no steps, or the first address that is erased, opted
            out, undeliverable, or already enrolled in this sequence.
    """
    if not sequence.steps:
        raise EnrollmentError("sequence has no steps")
    wanted = {email.strip().lower(): (name, company) for email, name, company in people}
    if not wanted:
        return 0
    addresses = list(wanted)
    erased = erased_addresses(session, sequence.team_id, addresses)
    if erased:
        raise EnrollmentError(f"{min(erased)}: {ERASED_MESSAGE}")
    known = _known_prospects(session, sequence.team_id, addresses)
    for email, prospect in known.items():
        _check_enrollable(prospect)
        name, company = wanted[email]
        if name and not prospect.name:
            prospect.name = name
        if company and not prospect.company:
            prospect.company = company
    new = [
        {
            "team_id": sequence.team_id,
            "email": e,
            "name": n,
            "company": c,
            "created_at": now,
            **zone_columns(from_domain(e)),
        }
        for e, (n, c) in wanted.items()
        if e not in known
    ]
    if new:
        session.execute(insert(Prospect), new)
    ids: dict[int, str] = {}
    for start in range(0, len(addresses), 500):
        chunk = addresses[start : start + 500]
        rows = session.execute(
            select(Prospect.id, Prospect.email).where(
                Prospect.team_id == sequence.team_id, Prospect.email.in_(chunk)
            )
        )
        ids.update({int(i): str(e) for i, e in rows})
        already = session.scalar(
            select(Prospect.email)
            .join(Enrollment, Enrollment.prospect_id == Prospect.id)
            .where(Enrollment.sequence_id == sequence.id, Prospect.email.in_(chunk))
            .limit(1)
        )
        if already is not None:
            raise EnrollmentError(f"{already} is already enrolled in this sequence")
    first_due = now + timedelta(seconds=sequence.steps[0].delay_seconds)
    session.execute(
        insert(Enrollment),
        [
            {
                "team_id": sequence.team_id,
                "sequence_id": sequence.id,
                "prospect_id": prospect_id,
                "state": EnrollmentState.ACTIVE,
                "state_reason": "enrolled",
                "state_changed_at": now,
                "next_step": 0,
                "next_step_at": first_due,
                "steps_sent": 0,
                "created_at": now,
            }
            for prospect_id in ids
        ],
    )
    prospect_ids = list(ids)
    enrollment_ids: list[int] = []
    for start in range(0, len(prospect_ids), 500):
        enrollment_ids.extend(
            int(i)
            for i in session.scalars(
                select(Enrollment.id).where(
                    Enrollment.sequence_id == sequence.id,
                    Enrollment.prospect_id.in_(prospect_ids[start : start + 500]),
                )
            )
        )
    session.execute(
        insert(EnrollmentTransition),
        [
            {
                "enrollment_id": enrollment_id,
                "from_state": "new",
                "to_state": "active",
                "reason": "enrolled",
                "at": now,
            }
            for enrollment_id in enrollment_ids
        ],
    )
    log.info("enrolled_many sequence_id=%s count=%s", sequence.id, len(enrollment_ids))
    return len(enrollment_ids)


def _known_prospects(session: Session, team_id: int, emails: list[str]) -> dict[str, Prospect]:
    known: dict[str, Prospect] = {}
    for start in range(0, len(emails), 500):
        chunk = emails[start : start + 500]
        for prospect in session.scalars(
            select(Prospect).where(Prospect.team_id == team_id, Prospect.email.in_(chunk))
        ):
            known[prospect.email] = prospect
    return known


def _check_enrollable(prospect: Prospect) -> None:
    refusal = why_not_enrollable(prospect)
    if refusal is not None:
        raise EnrollmentError(refusal)


def why_not_enrollable(prospect: Prospect) -> str | None:
    """Why the address may not be enrolled, with when and the reason on record; None: it may."""
    if prospect.opted_out_at is not None:
        why = f": {prospect.opted_out_reason}" if prospect.opted_out_reason else ""
        since = f"{prospect.opted_out_at:%Y-%m-%d}"
        return f"{prospect.email} is on the opt-out list since {since}{why}"
    if prospect.undeliverable_at is not None:
        return (
            f"{prospect.email} is undeliverable: it hard-bounced on "
            f"{prospect.undeliverable_at:%Y-%m-%d}"
        )
    return None


def transition(
    session: Session,
    enrollment_id: int,
    to_state: EnrollmentState,
    reason: str,
    *,
    from_states: frozenset[str] | set[str],
    event_id: int | None = None,
    now: datetime | None = None,
    **values: Any,
) -> bool:
    """Move an enrolment to `to_state` if it is in one of `from_states`.

    Returns False when another process got there first (or the state is not one
    we may leave). The transition and its reason are recorded. Any move clears
    `waits_for_sender` unless `values` sets it: only the claim's pause for the
    sender's own values marks it (`worker.sequences.missing_values`).
    """
    now = now or utcnow()
    values.setdefault("waits_for_sender", False)
    current = session.scalar(select(Enrollment.state).where(Enrollment.id == enrollment_id))
    result = session.execute(
        update(Enrollment)
        .where(Enrollment.id == enrollment_id, Enrollment.state.in_(list(from_states)))
        .values(state=to_state, state_reason=reason, state_changed_at=now, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(
        EnrollmentTransition(
            enrollment_id=enrollment_id,
            from_state=current or "?",
            to_state=to_state,
            reason=reason[:2000],
            event_id=event_id,
            at=now,
        )
    )
    return True


def transition_many(
    session: Session,
    enrollment_ids: list[int],
    to_state: EnrollmentState,
    reason: str,
    *,
    from_states: frozenset[str] | set[str],
    now: datetime,
    **values: Any,
) -> int:
    """`transition` for many enrolments at once, with the same promise; returns how many moved.

    For a change that reaches a whole team's worth of rows in one request (removing
    a member pauses every live enrolment sending from their mailboxes): one
    conditional UPDATE per 500 ids, RETURNING the ids it moved, and one INSERT of
    their transitions, instead of three statements an enrolment (5,000 enrolments:
    `python -m bench.members_removal`). An enrolment another process moved first is
    left alone and gets no transition; its `from_state` is the one read just before.
    """
    values.setdefault("waits_for_sender", False)
    moved: list[int] = []
    before: dict[int, str] = {}
    for start in range(0, len(enrollment_ids), 500):
        chunk = enrollment_ids[start : start + 500]
        read = session.execute(
            select(Enrollment.id, Enrollment.state).where(Enrollment.id.in_(chunk))
        )
        before.update({row_id: state for row_id, state in read})
        result = session.execute(
            update(Enrollment)
            .where(Enrollment.id.in_(chunk), Enrollment.state.in_(list(from_states)))
            .values(state=to_state, state_reason=reason, state_changed_at=now, **values)
            .returning(Enrollment.id)
            .execution_options(synchronize_session=False)
        )
        moved.extend(result.scalars().all())
    if moved:
        session.execute(
            insert(EnrollmentTransition),
            [
                {
                    "enrollment_id": enrollment_id,
                    "from_state": before.get(enrollment_id) or "?",
                    "to_state": to_state,
                    "reason": reason[:2000],
                    "at": now,
                }
                for enrollment_id in moved
            ],
        )
    return len(moved)


def resume_due(session: Session, now: datetime) -> int:
    """Resume paused enrolments whose resume time has come. Returns how many."""
    ids = session.scalars(
        select(Enrollment.id).where(
            Enrollment.state == EnrollmentState.PAUSED,
            Enrollment.resume_at.is_not(None),
            Enrollment.resume_at <= now,
        )
    ).all()
    resumed = 0
    for enrollment_id in ids:
        if transition(
            session,
            enrollment_id,
            EnrollmentState.ACTIVE,
            "resumed after pause",
            from_states={EnrollmentState.PAUSED},
            now=now,
            resume_at=None,
            next_step_at=now,
        ):
            resumed += 1
    return resumed


def is_final(state: str) -> bool:
    return state in FINAL_STATES
