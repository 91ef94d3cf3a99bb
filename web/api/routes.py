"""API v1 resources: mailboxes, sequences, enrollments, messages, events.

Each route is registered with `web.api.operations.operation`, which also describes it
in the OpenAPI document.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from flask import g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core.models import (
    Enrollment,
    EnrollmentTransition,
    Event,
    Mailbox,
    Prospect,
    SentMessage,
    Sequence,
    SequenceStep,
    utcnow,
)
from web.api.common import ApiError, id_page, int_arg, parse_body
from web.api.operations import Query, operation
from web.api.schemas import (
    ApiIndexOut,
    EnrollmentCreate,
    EnrollmentOut,
    EventList,
    EventOut,
    MailboxCreate,
    MailboxList,
    MailboxOut,
    MailboxPacing,
    MessageList,
    MessageOut,
    QuarantinedMessageOut,
    QuarantineList,
    SequenceCreate,
    SequenceOut,
    StepCreate,
    StepOut,
    TransitionOut,
    send_window_out,
)
from web.app.common import FormErrors
from web.app.preview import clean_content
from web.db import db
from worker.sequences.enrolling import EnrollmentError, enroll
from worker.sequences.missing_values import enrolment_warnings
from worker.sequences.pacing import daily_cap, resume_mailbox, sends_today
from worker.sequences.send_windows import set_zone, zone_name
from worker.sync import quarantine
from worker.sync.connecting import connect_imap, set_skip_folders
from worker.sync.folders import skip_in_force

PAGE_LIMIT = 500
QUARANTINE_LISTED = 100


class TeamOwned(Protocol):
    id: Any
    team_id: Any


T = TypeVar("T", bound=TeamOwned)


def owned(model: type[T], object_id: int, what: str) -> T:
    """The team's row, or a 404 ApiError: another team's id is answered as a missing one."""
    found = db().get(model, object_id)
    if found is None or found.team_id != g.team_id:
        raise ApiError(404, "not_found", f"{what} {object_id} not found")
    return found


@operation(
    "POST",
    "/mailboxes",
    summary="Connect a mailbox",
    body=MailboxCreate,
    response=MailboxOut,
    status=201,
    response_description="Created",
    errors=[409],
)
def create_mailbox() -> ResponseReturnValue:
    body = parse_body(MailboxCreate)
    mailbox = connect_imap(
        db(),
        team_id=g.team_id,
        user_id=g.user.id,
        email=body.email,
        credentials=body.credentials(),
        verify=body.verify,
    )
    return mailboxes_out([mailbox])[0].model_dump(mode="json"), 201


@operation("GET", "/mailboxes", summary="List the team's mailboxes", response=MailboxList)
def list_mailboxes() -> ResponseReturnValue:
    rows = db().scalars(select(Mailbox).where(Mailbox.team_id == g.team_id).order_by(Mailbox.id))
    return MailboxList(mailboxes=mailboxes_out(list(rows))).model_dump(mode="json")


@operation("GET", "/mailboxes/<int:mailbox_id>", summary="A mailbox", response=MailboxOut)
def get_mailbox(mailbox_id: int) -> ResponseReturnValue:
    mailbox = owned(Mailbox, mailbox_id, "mailbox")
    return mailboxes_out([mailbox])[0].model_dump(mode="json")


@operation(
    "PATCH",
    "/mailboxes/<int:mailbox_id>",
    summary="Set a mailbox's pacing and skipped folders, or resume its sends",
    body=MailboxPacing,
    response=MailboxOut,
)
def update_mailbox(mailbox_id: int) -> ResponseReturnValue:
    """Its own daily cap, spacing, skipped folders (null: the default); `resume` lifts a pause."""
    mailbox = owned(Mailbox, mailbox_id, "mailbox")
    body = parse_body(MailboxPacing)
    if "daily_cap" in body.model_fields_set:
        mailbox.daily_cap = body.daily_cap
    if "send_spacing_seconds" in body.model_fields_set:
        mailbox.send_spacing_seconds = body.send_spacing_seconds
    if body.resume:
        resume_mailbox(db(), mailbox.id, utcnow())
    db().commit()
    if "skip_folders" in body.model_fields_set:
        set_skip_folders(db(), mailbox, body.skip_folders)
    db().refresh(mailbox)
    return mailboxes_out([mailbox])[0].model_dump(mode="json")


@operation(
    "GET",
    "/mailboxes/<int:mailbox_id>/quarantine",
    summary="Messages the sync keeps but could not read, newest first",
    response=QuarantineList,
)
def get_quarantine(mailbox_id: int) -> ResponseReturnValue:
    """The messages the sync keeps but could not read: why, and when it tries again."""
    mailbox = owned(Mailbox, mailbox_id, "mailbox")
    count = quarantine.counts(db(), [mailbox.id]).get(mailbox.id, 0)
    messages = [
        QuarantinedMessageOut(
            id=row.id,
            from_addr=row.from_addr,
            subject=row.subject,
            received_at=row.received_at,
            held_since=row.created_at,
            reason=row.error or "could not be read",
            tries=quarantine.tries(row.details),
            next_try_at=quarantine.next_try_at(row.details),
            summary=quarantine.describe(row.error, row.details),
        )
        for row in quarantine.newest(db(), mailbox.id, QUARANTINE_LISTED)
    ]
    return QuarantineList(count=count, messages=messages).model_dump(mode="json")


def mailboxes_out(mailboxes: list[Mailbox]) -> list[MailboxOut]:
    """The mailboxes as the API shows them, each with its count of quarantined messages."""
    held = quarantine.counts(db(), [m.id for m in mailboxes])
    return [
        MailboxOut.model_validate(m).model_copy(
            update={
                "quarantined": held.get(m.id, 0),
                "daily_cap_in_force": daily_cap(m),
                "sends_today": sends_today(db(), m.id, utcnow()),
                "skip_folders_in_force": skip_in_force(m.skip_folders),
            }
        )
        for m in mailboxes
    ]


@operation(
    "POST",
    "/sequences",
    summary="Create a sequence",
    body=SequenceCreate,
    response=SequenceOut,
    status=201,
    response_description="Created",
)
def create_sequence() -> ResponseReturnValue:
    body = parse_body(SequenceCreate)
    mailbox = db().get(Mailbox, body.mailbox_id)
    if mailbox is None or mailbox.team_id != g.team_id:
        raise ApiError(
            422,
            "invalid_request",
            f"mailbox_id: mailbox {body.mailbox_id} not found",
            {"mailbox_id": "no such mailbox in your team"},
        )
    bodies = _checked_steps(body.steps)
    window = body.send_window.window()
    sequence = Sequence(
        team_id=g.team_id,
        mailbox_id=mailbox.id,
        name=body.name,
        time_zone=body.time_zone,
        send_days=window.days,
        send_start_minute=window.start_minute,
        send_end_minute=window.end_minute,
        holidays=sorted(d.isoformat() for d in window.holidays) or None,
        stop_at_company=body.stop_at_company,
        tracking=body.tracking,
        created_at=utcnow(),
    )
    sequence.steps = [
        SequenceStep(
            position=i,
            delay_seconds=s.delay_seconds,
            subject=s.subject.strip(),
            body_html=bodies[i],
            same_thread=s.same_thread,
        )
        for i, s in enumerate(body.steps)
    ]
    db().add(sequence)
    db().commit()
    return sequence_out(sequence), 201


def _checked_steps(steps: list[StepCreate]) -> list[str]:
    """Each step checked as the step form checks it; the bodies as they will be saved.

    The same rules as adding a step later (`web.app.preview.clean_content`: sanitised
    HTML, a subject unless the step replies in the thread, only known placeholders),
    so a sequence made in one call cannot hold what the pages would refuse.
    """
    errors: dict[str, str] = {}
    bodies: list[str] = []
    for i, step in enumerate(steps):
        found = FormErrors()
        if i == 0 and step.same_thread:
            found.add("same_thread", "the first step cannot reply in a thread")
        bodies.append(
            clean_content(
                found,
                step.subject.strip(),
                step.body_html,
                subject_required=not (step.same_thread and i > 0),
            )
        )
        errors.update({f"steps.{i}.{name}": message for name, message in found.items()})
    if errors:
        raise ApiError(422, "invalid_request", "; ".join(errors.values()), errors)
    return bodies


def sequence_out(sequence: Sequence) -> dict[str, object]:
    window = send_window_out(
        sequence.send_days, sequence.send_start_minute, sequence.send_end_minute, sequence.holidays
    )
    out = SequenceOut(
        id=sequence.id,
        name=sequence.name,
        mailbox_id=sequence.mailbox_id,
        steps=[StepOut.model_validate(s) for s in sequence.steps],
        time_zone=sequence.time_zone,
        send_window=window,
        stop_at_company=sequence.stop_at_company,
        tracking=sequence.tracking,
        created_at=sequence.created_at,
    )
    return out.model_dump(mode="json")


@operation("GET", "/sequences/<int:sequence_id>", summary="A sequence", response=SequenceOut)
def get_sequence(sequence_id: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    return sequence_out(sequence)


def enrollment_out(enrollment: Enrollment) -> dict[str, object]:
    prospect = db().get_one(Prospect, enrollment.prospect_id)
    sequence = db().get_one(Sequence, enrollment.sequence_id)
    transitions = db().scalars(
        select(EnrollmentTransition)
        .where(EnrollmentTransition.enrollment_id == enrollment.id)
        .order_by(EnrollmentTransition.id)
    )
    out = EnrollmentOut(
        id=enrollment.id,
        sequence_id=enrollment.sequence_id,
        prospect_id=prospect.id,
        email=prospect.email,
        name=prospect.name,
        state=enrollment.state,
        state_reason=enrollment.state_reason,
        state_changed_at=enrollment.state_changed_at,
        steps_sent=enrollment.steps_sent,
        next_step=enrollment.next_step,
        next_step_at=enrollment.next_step_at,
        resume_at=enrollment.resume_at,
        wait_reason=enrollment.wait_reason,
        time_zone=zone_name(sequence, prospect),
        time_zone_source=prospect.time_zone_source or "sequence default",
        transitions=[TransitionOut.model_validate(t) for t in transitions],
    )
    return out.model_dump(mode="json")


@operation(
    "POST",
    "/enrollments",
    summary="Enroll a prospect",
    body=EnrollmentCreate,
    response=EnrollmentOut,
    status=201,
    response_description="Created",
    errors=[409],
)
def create_enrollment() -> ResponseReturnValue:
    body = parse_body(EnrollmentCreate)
    sequence = db().get(Sequence, body.sequence_id)
    if sequence is None or sequence.team_id != g.team_id:
        raise ApiError(
            422,
            "invalid_request",
            f"sequence_id: sequence {body.sequence_id} not found",
            {"sequence_id": "no such sequence in your team"},
        )
    try:
        enrollment = enroll(db(), sequence=sequence, email=body.email, name=body.name, now=utcnow())
        if body.time_zone:
            set_zone(enrollment.prospect, body.time_zone)
        db().commit()
    except EnrollmentError as exc:
        db().rollback()
        status = 409 if "already enrolled" in str(exc) else 422
        raise ApiError(status, "cannot_enroll", str(exc), {"email": str(exc)}) from None
    except IntegrityError:
        db().rollback()
        raise ApiError(409, "cannot_enroll", f"{body.email} is already enrolled") from None
    out = enrollment_out(enrollment)
    # Said now, not found later as a pause: what the sender or the prospect lacks.
    out["warnings"] = enrolment_warnings(db(), sequence, enrollment.prospect)
    return out, 201


@operation(
    "GET",
    "/enrollments/<int:enrollment_id>",
    summary="An enrollment with its state history",
    response=EnrollmentOut,
)
def get_enrollment(enrollment_id: int) -> ResponseReturnValue:
    enrollment = owned(Enrollment, enrollment_id, "enrollment")
    return enrollment_out(enrollment)


@operation(
    "GET",
    "/messages",
    summary="Messages sent to an enrollment",
    response=MessageList,
    query=[Query("enrollment_id", required=True)],
    errors=[404],
)
def list_messages() -> ResponseReturnValue:
    enrollment_id = int_arg("enrollment_id", required=True)
    assert enrollment_id is not None
    owned(Enrollment, enrollment_id, "enrollment")
    rows = db().scalars(
        select(SentMessage)
        .where(SentMessage.enrollment_id == enrollment_id, SentMessage.team_id == g.team_id)
        .order_by(SentMessage.id)
        .limit(PAGE_LIMIT)
    )
    messages = [
        MessageOut(
            id=m.id,
            enrollment_id=m.enrollment_id,
            step_position=m.step_position,
            message_id=m.message_id,
            thread_id=m.thread_id,
            in_reply_to=m.in_reply_to,
            subject=m.subject,
            to=list(m.to_addrs),
            cc=list(m.cc_addrs),
            status=m.status,
            error=m.error,
            sent_at=m.sent_at,
        )
        for m in rows
    ]
    return MessageList(messages=messages).model_dump(mode="json")


@operation(
    "GET",
    "/events",
    summary="An enrollment's events, oldest first",
    response=EventList,
    query=[
        Query("enrollment_id", required=True),
        Query("after_id", minimum=0),
        Query("limit", maximum=PAGE_LIMIT),
    ],
    errors=[404],
)
def list_events() -> ResponseReturnValue:
    enrollment_id = int_arg("enrollment_id", required=True)
    assert enrollment_id is not None
    after_id = int_arg("after_id", default=0, minimum=0) or 0
    limit = int_arg("limit", default=100, minimum=1, maximum=PAGE_LIMIT) or 100
    owned(Enrollment, enrollment_id, "enrollment")
    query = select(Event).where(Event.enrollment_id == enrollment_id, Event.team_id == g.team_id)
    rows, next_after_id = id_page(query, Event.id, after_id, limit)
    body = EventList(events=[EventOut.model_validate(e) for e in rows], next_after_id=next_after_id)
    return jsonify(body.model_dump(mode="json"))


@operation(
    "GET",
    "/",
    summary="The API's name, version and where its description is",
    response=ApiIndexOut,
    public=True,
)
def index() -> ResponseReturnValue:
    openapi = request.url_root.rstrip("/") + "/api/v1/openapi.json"
    return ApiIndexOut(api="sightline", version=1, openapi=openapi).model_dump(mode="json")
