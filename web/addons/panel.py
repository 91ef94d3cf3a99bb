"""The prospect panel: who the people of an open thread are to the team, and what to do.

One call per thread, a few indexed queries whatever its size: prospects by
(team, address), their enrolments with their sequences, the team's sequences,
then each person's newest opens, clicks and document readings (events by
prospect, `ix_events_*`), worded by the Live Feed's own `feed_items` so the
panel and the feed never disagree. Actions go through the same code as the web
app: `worker.sequences.enrolling.enroll` and `worker.sequences.by_hand`.

Must never: show or touch another team's prospect, sequence or enrolment (every
query is filtered by the user's team; a foreign id reads as not found).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.erasure import ERASED_MESSAGE, is_erased
from core.models import (
    Enrollment,
    Event,
    Mailbox,
    Prospect,
    Sequence,
    SequencePause,
    SequenceStep,
    User,
    utcnow,
)
from web.addons.drafts import clean_addresses
from web.addons.views import (
    ACTIVITY_LIMIT,
    MAX_ADDRESSES,
    ActionResult,
    Activity,
    AddonError,
    EnrollmentAction,
    EnrollmentView,
    PersonPanel,
    ProspectPanel,
    SequenceChoice,
)
from web.feed import feed_items
from worker.sequences.by_hand import FROM_STATES, Action, change_by_hand
from worker.sequences.enrolling import EnrollmentError, enroll, why_not_enrollable

ACTIVITY_KINDS = ("open", "click", "document_view")
# The panel's words for an action, and the by-hand action it is.
_ACTIONS: dict[EnrollmentAction, Action] = {"pause": "pause", "resume": "resume", "stop": "finish"}
_DONE = {"pause": "Paused.", "resume": "Resumed.", "stop": "Stopped: no further step goes out."}


def _own_addresses(session: Session, team_id: int, addresses: list[str]) -> set[str]:
    """Those of `addresses` that are the team's own (a user's, a mailbox's)."""
    users = session.scalars(
        select(func.lower(User.email)).where(
            User.team_id == team_id, func.lower(User.email).in_(addresses)
        )
    )
    mailboxes = session.scalars(
        select(func.lower(Mailbox.email)).where(
            Mailbox.team_id == team_id, func.lower(Mailbox.email).in_(addresses)
        )
    )
    return {*users, *mailboxes}


def sequence_choices(session: Session, team_id: int) -> list[SequenceChoice]:
    """The team's sequences a person can be added to: with steps, not paused."""
    has_steps = select(SequenceStep.id).where(SequenceStep.sequence_id == Sequence.id).exists()
    paused = select(SequencePause.sequence_id).where(SequencePause.sequence_id == Sequence.id)
    rows = session.execute(
        select(Sequence.id, Sequence.name)
        .where(Sequence.team_id == team_id, has_steps, ~paused.exists())
        .order_by(Sequence.name, Sequence.id)
    )
    return [SequenceChoice(int(i), str(n)) for i, n in rows]


def enrollment_view(enrollment: Enrollment, sequence_name: str, steps: int) -> EnrollmentView:
    actions = tuple(
        name for name, action in _ACTIONS.items() if enrollment.state in FROM_STATES[action]
    )
    live = enrollment.state in FROM_STATES["finish"] and enrollment.next_step < steps
    return EnrollmentView(
        id=enrollment.id,
        sequence_id=enrollment.sequence_id,
        sequence_name=sequence_name,
        state=enrollment.state,
        reason=enrollment.state_reason,
        next_step=enrollment.next_step + 1 if live else None,
        steps_total=steps,
        steps_sent=enrollment.steps_sent,
        state_changed_at=enrollment.state_changed_at,
        actions=actions,
    )


def _step_counts(session: Session, sequence_ids: set[int]) -> dict[int, int]:
    if not sequence_ids:
        return {}
    rows = session.execute(
        select(SequenceStep.sequence_id, func.count())
        .where(SequenceStep.sequence_id.in_(sorted(sequence_ids)))
        .group_by(SequenceStep.sequence_id)
    )
    return {int(s): int(c) for s, c in rows}


def _activity(session: Session, team_id: int, prospect_ids: list[int]) -> dict[int, list[Activity]]:
    """Each prospect's newest opens, clicks and readings, at most ACTIVITY_LIMIT of each."""
    wanted: list[int] = []
    for prospect_id in prospect_ids:
        for kind in ACTIVITY_KINDS:
            wanted += session.scalars(
                select(Event.id)
                .where(
                    Event.team_id == team_id,
                    Event.prospect_id == prospect_id,
                    Event.kind == kind,
                )
                .order_by(Event.occurred_at.desc(), Event.id.desc())
                .limit(ACTIVITY_LIMIT)
            )
    found: dict[int, list[Activity]] = defaultdict(list)
    if not wanted:
        return found
    rows = session.execute(select(Event.id, Event.prospect_id).where(Event.id.in_(wanted)))
    owner = {int(event_id): prospect_id for event_id, prospect_id in rows}
    for item in feed_items(session, team_id=team_id, ids=wanted, limit=len(wanted)):
        whose = owner.get(item["id"])
        if whose is None:
            continue
        subject = item.get("subject")
        text = item.get("text") or (f"{item['label']} “{subject}”" if subject else item["label"])
        document = item.get("document") or {}
        found[whose].append(
            Activity(
                kind=item["kind"],
                occurred_at=datetime.fromisoformat(item["occurred_at"]),
                text=text,
                subject=subject,
                url=item.get("url"),
                document=document.get("name"),
            )
        )
    return found


def prospect_panel(session: Session, user: User, addresses: list[str]) -> ProspectPanel:
    """See `web.addons.service.prospect_panel`."""
    if len(addresses) > MAX_ADDRESSES:
        raise AddonError("invalid", f"at most {MAX_ADDRESSES} addresses", "addresses")
    wanted = clean_addresses(addresses, "addresses")
    own = _own_addresses(session, user.team_id, wanted)
    people = [a for a in wanted if a not in own]
    prospects = (
        {
            p.email: p
            for p in session.scalars(
                select(Prospect).where(Prospect.team_id == user.team_id, Prospect.email.in_(people))
            )
        }
        if people
        else {}
    )
    ids = [p.id for p in prospects.values()]
    enrollments: dict[int, list[tuple[Enrollment, str]]] = defaultdict(list)
    if ids:
        found = session.execute(
            select(Enrollment, Sequence.name)
            .join(Sequence, Sequence.id == Enrollment.sequence_id)
            .where(Enrollment.team_id == user.team_id, Enrollment.prospect_id.in_(ids))
            .order_by(Enrollment.id.desc())
        )
        for enrollment, name in found:
            enrollments[enrollment.prospect_id].append((enrollment, str(name)))
    steps = _step_counts(session, {e.sequence_id for rows in enrollments.values() for e, _ in rows})
    choices = sequence_choices(session, user.team_id)
    activity = _activity(session, user.team_id, ids)
    panels = []
    for address in people:
        prospect = prospects.get(address)
        mine = enrollments.get(prospect.id, []) if prospect else []
        enrolled_in = {e.sequence_id for e, _ in mine}
        if prospect is not None:
            blocked = why_not_enrollable(prospect)
        else:
            blocked = ERASED_MESSAGE if is_erased(session, user.team_id, address) else None
        done = activity.get(prospect.id, []) if prospect else []
        panels.append(
            PersonPanel(
                address=address,
                prospect_id=prospect.id if prospect else None,
                name=prospect.name if prospect else None,
                company=prospect.company if prospect else None,
                enrollments=[enrollment_view(e, n, steps.get(e.sequence_id, 0)) for e, n in mine],
                last_opens=[a for a in done if a.kind == "open"],
                last_clicks=[a for a in done if a.kind == "click"],
                pages_read=[a for a in done if a.kind == "document_view"],
                add_to=[] if blocked else [c for c in choices if c.id not in enrolled_in],
                not_enrollable=blocked,
            )
        )
    return ProspectPanel(people=panels, skipped=sorted(own))


def add_to_sequence(
    session: Session, user: User, sequence_id: int, address: str, name: str | None
) -> ActionResult:
    """See `web.addons.service.add_to_sequence`. Commits."""
    cleaned = clean_addresses([address], "address")
    if len(cleaned) != 1:
        raise AddonError("invalid", "one email address", "address")
    sequence = session.get(Sequence, sequence_id)
    if sequence is None or sequence.team_id != user.team_id:
        raise AddonError("not_found", f"sequence {sequence_id} not found", "sequence_id")
    try:
        enrollment = enroll(session, sequence=sequence, email=cleaned[0], name=name, now=utcnow())
    except EnrollmentError as exc:
        session.rollback()
        return ActionResult(ok=False, message=f"Not added: {exc}.")
    session.commit()
    who = enrollment.prospect.name or enrollment.prospect.email
    view = enrollment_view(enrollment, sequence.name, len(sequence.steps))
    return ActionResult(ok=True, message=f"{who} added to {sequence.name}.", enrollment=view)


def change(
    session: Session, user: User, enrollment_id: int, action: EnrollmentAction
) -> ActionResult:
    """Pause, resume or stop an enrolment of the user's team. Commits."""
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None or enrollment.team_id != user.team_id:
        raise AddonError("not_found", f"enrolment {enrollment_id} not found", "enrollment_id")
    changed = change_by_hand(session, enrollment.id, _ACTIONS[action], user.email)
    session.commit()
    session.refresh(enrollment)
    sequence = session.get_one(Sequence, enrollment.sequence_id)
    view = enrollment_view(enrollment, sequence.name, len(sequence.steps))
    if not changed:
        state = enrollment.state.replace("_", " ")
        return ActionResult(
            ok=False, message=f"Nothing changed: the enrolment is {state}.", enrollment=view
        )
    return ActionResult(ok=True, message=_DONE[action], enrollment=view)
