"""API v1: sequences after they are created: list, change, delete; their steps.

    GET    /sequences?after_id=&limit=                oldest first
    PATCH  /sequences/{id}                            name, mailbox, zone, window, company stop,
                                                      tracking
    DELETE /sequences/{id}                            only while nobody was ever enrolled
    POST   /sequences/{id}/steps                      add a step at the end
    PATCH  /sequences/{id}/steps/{position}           change a step (position counts from 0)
    DELETE /sequences/{id}/steps/{position}           the last step, if nobody received it
    PUT    /sequences/{id}/steps/order {order}        reorder, while no step was sent
    POST   /sequences/{id}/resume                     lift the bounce guard's pause (as the
                                                      Mailboxes page does)

The rules are the sequence pages': `worker.sequences.editing` (history stays
true: a sent step stays, the order is fixed once anything went out, the
sending mailbox too) and `web.app.preview.clean_content` for a step's subject
and body (sanitised HTML, only known placeholders). A refusal by those rules is
a 409 with the page's sentence; a bad field is a 422 naming it.
"""

from __future__ import annotations

from typing import Annotated

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import Field, field_validator, model_validator
from sqlalchemy import select

from core.header_text import check_header_text
from core.models import Mailbox, Sequence, SequenceStep, utcnow
from web.api.common import PAGE_DEFAULT, PAGE_MAX, ApiError, id_page, int_arg, parse_body
from web.api.operations import Query, operation
from web.api.routes import owned, sequence_out
from web.api.schemas import (
    MAX_ID,
    Request,
    Response,
    SendWindowIn,
    SequenceOut,
    StepCreate,
    check_time_zone,
)
from web.app.common import FormErrors
from web.app.preview import BODY_LIMIT, clean_content
from web.app.send_window_form import apply_window
from web.db import db
from worker.sequences.editing import (
    delete_sequence,
    remove_last_step,
    reorder_steps,
    save_step,
    sent_count,
)
from worker.sequences.pacing import resume_sequence

MAX_DELAY = 365 * 24 * 3600
REFUSED = "Refused to keep history true (error.message says why)"


class SequenceUpdate(Request):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    mailbox_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="fixed once the sequence sent anything"
    )
    time_zone: str | None = Field(default=None, max_length=64)
    send_window: SendWindowIn | None = None
    stop_at_company: bool | None = None
    tracking: bool | None = Field(
        default=None, description="null (given explicitly) follows the team's default again"
    )

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_time_zone(value)


class StepUpdate(Request):
    delay_seconds: int | None = Field(default=None, ge=0, le=MAX_DELAY)
    subject: str | None = Field(default=None, max_length=998)
    body_html: str | None = Field(default=None, min_length=1, max_length=BODY_LIMIT)
    same_thread: bool | None = None

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        return None if value is None else check_header_text(value)


class StepOrder(Request):
    order: list[Annotated[int, Field(ge=0, le=49)]] = Field(
        min_length=1,
        max_length=50,
        description="the steps' current positions in their new order: [1, 0] swaps two",
    )

    @model_validator(mode="after")
    def _once(self) -> StepOrder:
        if len(set(self.order)) != len(self.order):
            raise ValueError("order: list each position once")
        return self


class SequenceResumed(Response):
    sequence_id: int
    released: int = Field(description="steps that were waiting for the pause and are now due")


class SequenceList(Response):
    sequences: list[SequenceOut]
    next_after_id: int | None = Field(description="pass as ?after_id= for the next page")


def _step(sequence: Sequence, position: int) -> SequenceStep:
    step = next((s for s in sequence.steps if s.position == position), None)
    if step is None:
        raise ApiError(404, "not_found", f"sequence {sequence.id} has no step {position}")
    return step


def _refused(message: str) -> ApiError:
    db().rollback()
    return ApiError(409, "conflict", message)


def _checked_step(
    sequence: Sequence,
    step: SequenceStep | None,
    delay_seconds: int,
    subject: str,
    body_html: str,
    same_thread: bool,
) -> None:
    """Check as the step form does, then save (`worker.sequences.editing.save_step`)."""
    first = (step.position if step is not None else len(sequence.steps)) == 0
    errors = FormErrors()
    if first and same_thread:
        errors.add("same_thread", "the first step cannot reply in a thread")
    body = clean_content(
        errors, subject.strip(), body_html, subject_required=not (same_thread and not first)
    )
    if errors:
        fields = dict(errors.items())
        raise ApiError(422, "invalid_request", "; ".join(fields.values()), fields)
    save_step(
        db(),
        sequence,
        step,
        delay_seconds=delay_seconds,
        subject=subject.strip(),
        body_html=body,
        same_thread=same_thread,
    )
    db().commit()


@operation(
    "GET",
    "/sequences",
    summary="The team's sequences, oldest first",
    response=SequenceList,
    query=[Query("after_id", minimum=0), Query("limit", maximum=PAGE_MAX)],
)
def list_sequences() -> ResponseReturnValue:
    after_id = int_arg("after_id", default=0, minimum=0) or 0
    limit = int_arg("limit", default=PAGE_DEFAULT, maximum=PAGE_MAX) or PAGE_DEFAULT
    query = select(Sequence).where(Sequence.team_id == g.team_id)
    rows, next_after_id = id_page(query, Sequence.id, after_id, limit)
    return {
        "sequences": [sequence_out(s) for s in rows],
        "next_after_id": next_after_id,
    }


@operation(
    "PATCH",
    "/sequences/<int:sequence_id>",
    summary="Change a sequence's name, mailbox, time zone, send window, company stop, tracking",
    body=SequenceUpdate,
    response=SequenceOut,
    errors={409: "The mailbox cannot change: the sequence already sent from it"},
)
def update_sequence(sequence_id: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    body = parse_body(SequenceUpdate)
    given = body.model_fields_set
    if body.mailbox_id is not None and body.mailbox_id != sequence.mailbox_id:
        mailbox = db().get(Mailbox, body.mailbox_id)
        if mailbox is None or mailbox.team_id != g.team_id:
            raise ApiError(
                422,
                "invalid_request",
                f"mailbox_id: mailbox {body.mailbox_id} not found",
                {"mailbox_id": "no such mailbox in your team"},
            )
        if sent_count(db(), sequence):
            raise _refused("mailbox_id: the sequence already sent from its mailbox; it stays")
        sequence.mailbox_id = mailbox.id
    if body.name is not None:
        sequence.name = " ".join(body.name.split())
    if body.time_zone is not None or body.send_window is not None:
        zone = body.time_zone or sequence.time_zone
        if body.send_window is not None:
            window = body.send_window.window()
            apply_window(sequence, zone, window)
        else:
            sequence.time_zone = zone
    if body.stop_at_company is not None:
        sequence.stop_at_company = body.stop_at_company
    if "tracking" in given:
        sequence.tracking = body.tracking
    db().commit()
    return sequence_out(sequence)


@operation(
    "DELETE",
    "/sequences/<int:sequence_id>",
    summary="Delete a sequence nobody was ever enrolled in",
    status=204,
    response_description="Deleted",
    errors={409: "Has enrollments: finish them instead (deleting would delete their history)"},
)
def remove_sequence(sequence_id: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    refused = delete_sequence(db(), sequence)
    if refused:
        raise _refused(refused)
    db().commit()
    return "", 204


@operation(
    "POST",
    "/sequences/<int:sequence_id>/steps",
    summary="Add a step at the end of a sequence",
    body=StepCreate,
    response=SequenceOut,
    status=201,
    response_description="The sequence with its new step",
)
def add_step(sequence_id: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    body = parse_body(StepCreate)
    if len(sequence.steps) >= 50:
        raise ApiError(422, "invalid_request", "steps: at most 50", {"steps": "at most 50"})
    _checked_step(
        sequence, None, body.delay_seconds, body.subject, body.body_html, body.same_thread
    )
    return sequence_out(sequence), 201


@operation(
    "PATCH",
    "/sequences/<int:sequence_id>/steps/<int:position>",
    summary="Change a step (what was already sent keeps its text)",
    body=StepUpdate,
    response=SequenceOut,
)
def update_step(sequence_id: int, position: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    step = _step(sequence, position)
    body = parse_body(StepUpdate)
    _checked_step(
        sequence,
        step,
        step.delay_seconds if body.delay_seconds is None else body.delay_seconds,
        step.subject if body.subject is None else body.subject,
        step.body_html if body.body_html is None else body.body_html,
        step.same_thread if body.same_thread is None else body.same_thread,
    )
    return sequence_out(sequence)


@operation(
    "DELETE",
    "/sequences/<int:sequence_id>/steps/<int:position>",
    summary="Remove the last step, if nobody received it",
    response=SequenceOut,
    response_description="The sequence without the step",
    errors={409: REFUSED},
)
def delete_step(sequence_id: int, position: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    refused = remove_last_step(db(), sequence, _step(sequence, position))
    if refused:
        raise _refused(refused)
    db().commit()
    return sequence_out(sequence)


@operation(
    "PUT",
    "/sequences/<int:sequence_id>/steps/order",
    summary="Reorder the steps, while none of them was sent",
    body=StepOrder,
    response=SequenceOut,
    errors={409: REFUSED},
)
def reorder(sequence_id: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    body = parse_body(StepOrder)
    refused = reorder_steps(db(), sequence, body.order)
    if refused is not None and refused.startswith("order:"):
        db().rollback()
        message = refused.removeprefix("order: ")
        raise ApiError(422, "invalid_request", refused, {"order": message})
    if refused:
        raise _refused(refused)
    db().commit()
    db().refresh(sequence)
    return sequence_out(sequence)


@operation(
    "POST",
    "/sequences/<int:sequence_id>/resume",
    summary="Lift a sequence's pause by the bounce guard: its waiting steps are due at once",
    response=SequenceResumed,
)
def resume(sequence_id: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    released = resume_sequence(db(), sequence.id, utcnow())
    db().commit()
    return SequenceResumed(sequence_id=sequence.id, released=released).model_dump(mode="json")
