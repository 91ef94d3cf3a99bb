"""API v1's operations for the mail-window add-ons (the Outlook task pane calls them).

Every operation is `web.addons.service` over HTTP, for the signed-in user's team
only: the bearer is an API token or the Outlook add-in's own token
(`web.addons.outlook.bearer`). The service's `AddonError` becomes the API's error
answer (`{"error": {"code", "message", "fields"}}`, 404 for another team's ids)::

    POST /addons/panel                          the people of a thread
    POST /addons/sequences/<id>/enrollments     add one of them to a sequence
    POST /addons/enrollments/<id>/<action>      pause | resume | stop
    GET  /addons/feed?limit=                    the latest Live Feed items
    GET  /addons/content                        library documents, or why none
    POST /addons/drafts                         tracking for a draft: link and/or pixel
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field

from core.models import Sequence
from web.addons import service
from web.addons.outlook.bearer import addin_or_api_token
from web.api.common import ApiError, int_arg, parse_body
from web.api.operations import Query, operation
from web.api.routes import owned
from web.api.schemas import Request
from web.db import db

MAX_TEXT = 320


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SequenceChoiceOut(Out):
    id: int
    name: str


class EnrollmentOut(Out):
    id: int
    sequence_id: int
    sequence_name: str
    state: str
    reason: str | None
    next_step: int | None = Field(description="1-based number of the next step; null: none")
    steps_total: int
    steps_sent: int
    state_changed_at: datetime
    actions: list[Literal["pause", "resume", "stop"]]


class ActivityOut(Out):
    kind: str
    occurred_at: datetime
    text: str
    subject: str | None
    url: str | None
    document: str | None


class PersonOut(Out):
    address: str
    prospect_id: int | None
    name: str | None
    company: str | None
    enrollments: list[EnrollmentOut]
    last_opens: list[ActivityOut]
    last_clicks: list[ActivityOut]
    pages_read: list[ActivityOut]
    add_to: list[SequenceChoiceOut]
    not_enrollable: str | None


class PanelOut(Out):
    people: list[PersonOut]
    skipped: list[str] = Field(description="The team's own addresses, left out")


class ActionOut(Out):
    ok: bool
    message: str
    enrollment: EnrollmentOut | None


class FeedItemOut(Out):
    id: int
    kind: str
    label: str
    text: str
    occurred_at: datetime | None
    prospect_email: str | None
    prospect_name: str | None
    subject: str | None
    sequence_name: str | None
    origin: str | None = Field(description="gmail / outlook: sent from the mail client")


class FeedOut(BaseModel):
    items: list[FeedItemOut]


class DocumentChoiceOut(Out):
    id: int
    name: str
    kind: str
    page_count: int | None


class ContentOut(Out):
    documents: list[DocumentChoiceOut]
    unavailable: str | None = Field(description="Why no document can be used (Solo plan)")


class DraftOut(Out):
    sent_message_id: int
    html: str = Field(description="What to insert at the cursor: the link, then the pixel")
    link_url: str | None
    pixel_url: str | None
    per_recipient: bool
    document_name: str | None


class PanelIn(Request):
    addresses: list[str] = Field(max_length=service.MAX_ADDRESSES)


class EnrollIn(Request):
    address: str = Field(min_length=3, max_length=MAX_TEXT)
    name: str | None = Field(default=None, max_length=200)


class RecipientsIn(Request):
    to: list[str] = Field(default_factory=list, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)


class DraftIn(Request):
    source: Literal["gmail", "outlook"]
    draft_ref: str = Field(min_length=1, max_length=500)
    recipients: RecipientsIn
    document_id: int | None = Field(default=None, ge=1, le=2**31 - 1)
    track_opens: bool = False
    sender: str | None = Field(default=None, max_length=MAX_TEXT)


def _answer(model: type[Out], value: Any) -> dict[str, Any]:
    return model.model_validate(value).model_dump(mode="json")


def _call(do: Any, *args: Any, **kwargs: Any) -> Any:
    """The service's answer, or its refusal as the API's error answer."""
    try:
        return do(db(), g.user.id, *args, **kwargs)
    except service.AddonError as exc:
        fields = {exc.field: exc.message} if exc.field else None
        raise ApiError(exc.status, exc.code, exc.message, fields) from exc


@operation(
    "POST",
    "/addons/panel",
    summary="The people of an open thread: prospect, sequences, recent activity, actions",
    body=PanelIn,
    response=PanelOut,
)
@addin_or_api_token
def addon_panel() -> ResponseReturnValue:
    body = parse_body(PanelIn)
    return _answer(PanelOut, _call(service.prospect_panel, body.addresses))


@operation(
    "POST",
    "/addons/sequences/<int:sequence_id>/enrollments",
    summary="Add a person of the thread to one of the team's sequences",
    body=EnrollIn,
    response=ActionOut,
    response_description="ok false with the reason when the person cannot be enrolled",
)
@addin_or_api_token
def addon_enroll(sequence_id: int) -> ResponseReturnValue:
    owned(Sequence, sequence_id, "sequence")  # another team's id: 404 before the body is read
    body = parse_body(EnrollIn)
    return _answer(ActionOut, _call(service.add_to_sequence, sequence_id, body.address, body.name))


@operation(
    "POST",
    "/addons/enrollments/<int:enrollment_id>/<any(pause, resume, stop):action>",
    summary="Pause, resume or stop an enrolment",
    response=ActionOut,
    response_description="ok false when the enrolment's state no longer allows it",
)
@addin_or_api_token
def addon_enrollment_action(enrollment_id: int, action: str) -> ResponseReturnValue:
    do = {"pause": service.pause, "resume": service.resume, "stop": service.stop}[action]
    return _answer(ActionOut, _call(do, enrollment_id))


@operation(
    "GET",
    "/addons/feed",
    summary="The latest Live Feed items of the user's team",
    response=FeedOut,
    query=[Query("limit", maximum=service.MAX_FEED_LIMIT, description="Default 20")],
)
@addin_or_api_token
def addon_feed() -> ResponseReturnValue:
    limit = int_arg("limit", default=service.FEED_LIMIT, maximum=service.MAX_FEED_LIMIT)
    items = _call(service.feed_items, limit or service.FEED_LIMIT)
    return {"items": [_answer(FeedItemOut, item) for item in items]}


@operation(
    "GET",
    "/addons/content",
    summary="The team's library documents for a draft, or why there are none",
    response=ContentOut,
)
@addin_or_api_token
def addon_content() -> ResponseReturnValue:
    return _answer(ContentOut, _call(service.content_choices))


@operation(
    "POST",
    "/addons/drafts",
    summary="Tracking for a draft: a document link and/or the pixel, made once per draft",
    body=DraftIn,
    response=DraftOut,
    errors={
        403: "Trackable content is a Team plan feature",
        404: "No such document in the team's library",
        409: "No mailbox of the user's connected",
    },
)
@addin_or_api_token
def addon_draft() -> ResponseReturnValue:
    body = parse_body(DraftIn)
    recipients = service.Recipients(
        to=body.recipients.to, cc=body.recipients.cc, bcc=body.recipients.bcc
    )
    made = _call(
        service.insert_for_draft,
        source=body.source,
        draft_ref=body.draft_ref,
        recipients=recipients,
        document_id=body.document_id,
        track_opens=body.track_opens,
        sender=body.sender,
    )
    return _answer(DraftOut, made)
