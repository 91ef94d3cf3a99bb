"""API v1: one-off emails (written by hand, sent now or later): write, list, one, cancel.

    POST /emails {mailbox_id, to, cc, subject, body_html, tracked, document_ids, send_at}
    GET  /emails?status=&after_id=&limit=   oldest first; status scheduled, claimed, cancelled
    GET  /emails/{id}                       with `phase`, the one true thing about it now
    POST /emails/{id}/cancel                scheduled → cancelled; 409 once it is being sent

Writing one is the compose page's own `check_compose` and `create_email`
(`web.app.compose`): the same checks (recipients not erased, opted out or
undeliverable; placeholders with a value for the first recipient; library
documents only as tracked links), each refusal on its field, and the same
hand-over to the sending worker. Plain file attachments are the page's alone.
`phase` is the email page's (`web.app.emails.send_phase`); cancelling is
`worker.sequences.oneoff.cancel`, the conditional UPDATE the page uses, so a
worker claiming the email at the same moment wins or loses cleanly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field
from sqlalchemy import select

from core.models import OneOffEmail, SentMessage, Team, utcnow
from web.api.common import PAGE_DEFAULT, PAGE_MAX, ApiError, id_page, parse_body, parse_query
from web.api.operations import operation
from web.api.routes import owned
from web.api.schemas import MAX_ID, Request, Response
from web.app.common import FormErrors
from web.app.compose import MAX_RECIPIENTS, check_compose, create_email
from web.app.emails import send_phase
from web.app.preview import BODY_LIMIT, SUBJECT_LIMIT
from web.db import db
from worker.sequences import oneoff

# The form's field names where the API's differ.
FIELDS = {"documents": "document_ids"}


class EmailQuery(BaseModel):
    status: Literal["scheduled", "claimed", "cancelled"] | None = Field(
        default=None, description="only emails in this state (claimed: being sent or sent)"
    )
    after_id: int = Field(default=0, ge=0, le=MAX_ID, description="the last id of the page before")
    limit: int = Field(default=PAGE_DEFAULT, ge=1, le=PAGE_MAX)


class EmailCreate(Request):
    mailbox_id: int = Field(ge=1, le=MAX_ID, description="one of the team's connected mailboxes")
    to: list[Annotated[str, Field(min_length=3, max_length=400)]] = Field(
        min_length=1,
        max_length=MAX_RECIPIENTS,
        description='addresses, or "Dana Scully <dana@acme.test>"; the first fills placeholders',
    )
    cc: list[Annotated[str, Field(min_length=3, max_length=400)]] = Field(
        default_factory=list, max_length=MAX_RECIPIENTS
    )
    subject: str = Field(max_length=SUBJECT_LIMIT, description="placeholders allowed")
    body_html: str = Field(max_length=BODY_LIMIT, description="HTML or plain text; sanitised")
    tracked: bool | None = Field(default=None, description="null: the team's tracking_enabled")
    document_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=10, description="library documents, as tracked links"
    )
    send_at: datetime | None = Field(default=None, description="with a time zone; null sends now")
    template_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="the template it was written from, if any"
    )


class EmailOut(Response):
    id: int
    mailbox_id: int
    prospect_id: int | None
    template_id: int | None
    to: list[str]
    cc: list[str]
    subject: str
    body_html: str
    tracked: bool
    document_ids: list[int]
    status: str = Field(description="scheduled, claimed (handed to sending) or cancelled")
    phase: str = Field(
        description="scheduled, sending, waiting (the mailbox needs reconnecting), sent, "
        "failed, bounced or cancelled"
    )
    send_at: datetime
    sent_message_id: int | None
    message_id: str | None = Field(description="the Message-ID it went out with")
    created_at: datetime
    cancelled_at: datetime | None


class EmailList(Response):
    emails: list[EmailOut]
    next_after_id: int | None = Field(description="pass as ?after_id= for the next page")


def _out(email: OneOffEmail) -> EmailOut:
    sent = db().get(SentMessage, email.sent_message_id) if email.sent_message_id else None
    return EmailOut(
        id=email.id,
        mailbox_id=email.mailbox_id,
        prospect_id=email.prospect_id,
        template_id=email.template_id,
        to=list(email.to_addrs),
        cc=list(email.cc_addrs),
        subject=email.subject,
        body_html=email.body_html,
        tracked=email.tracked,
        document_ids=list(email.document_ids or []),
        status=email.status,
        phase=send_phase(email, sent),
        send_at=email.send_at,
        sent_message_id=email.sent_message_id,
        message_id=sent.message_id if sent is not None else None,
        created_at=email.created_at,
        cancelled_at=email.cancelled_at,
    )


@operation(
    "GET",
    "/emails",
    summary="The team's one-off emails, oldest first",
    response=EmailList,
    query=EmailQuery,
)
def list_emails() -> ResponseReturnValue:
    args = parse_query(EmailQuery)
    query = select(OneOffEmail).where(OneOffEmail.team_id == g.team_id)
    if args.status is not None:
        query = query.where(OneOffEmail.status == args.status)
    rows, next_after_id = id_page(query, OneOffEmail.id, args.after_id, args.limit)
    return EmailList(emails=[_out(e) for e in rows], next_after_id=next_after_id).model_dump(
        mode="json"
    )


@operation(
    "POST",
    "/emails",
    summary="Write a one-off email: sent now, or scheduled for send_at",
    body=EmailCreate,
    response=EmailOut,
    status=201,
    response_description="Stored: sending now (phase sending) or scheduled",
    errors={
        422: "Invalid field (named in error.fields): a recipient erased, opted out or "
        "undeliverable, a placeholder without a value, a time in the past …"
    },
)
def create_one_off_email() -> ResponseReturnValue:
    body = parse_body(EmailCreate)
    if body.send_at is not None and body.send_at.tzinfo is None:
        message = "give a time zone (e.g. 2026-12-31T17:00:00Z)"
        raise ApiError(422, "invalid_request", f"send_at: {message}", {"send_at": message})
    team = db().get_one(Team, g.team_id)
    values: dict[str, Any] = {
        "mailbox_id": str(body.mailbox_id),
        "to": ", ".join(body.to),
        "cc": ", ".join(body.cc),
        "subject": body.subject,
        "body_html": body.body_html,
        "tracked": team.tracking_enabled if body.tracked is None else body.tracked,
        "documents": [str(d) for d in body.document_ids],
        "when": "later" if body.send_at is not None else "now",
        "send_at": body.send_at.isoformat() if body.send_at is not None else "",
        "tz_offset": "",
        "template_id": str(body.template_id or ""),
    }
    errors = FormErrors()
    now = utcnow()
    checked = check_compose(values, [], errors, now)
    if checked is None:
        fields = {FIELDS.get(name, name): message for name, message in errors.items()}
        raise ApiError(422, "invalid_request", "; ".join(fields.values()), fields)
    email = create_email(values, checked, [], now)
    return _out(email).model_dump(mode="json"), 201


@operation("GET", "/emails/<int:email_id>", summary="A one-off email", response=EmailOut)
def get_email(email_id: int) -> ResponseReturnValue:
    return _out(owned(OneOffEmail, email_id, "email")).model_dump(mode="json")


@operation(
    "POST",
    "/emails/<int:email_id>/cancel",
    summary="Cancel a scheduled email (too late once it is being sent)",
    response=EmailOut,
    errors={409: "Too late: it is already being sent (or was cancelled)"},
)
def cancel_email(email_id: int) -> ResponseReturnValue:
    email = owned(OneOffEmail, email_id, "email")
    if not oneoff.cancel(db(), email.id, g.team_id, utcnow()):
        db().rollback()
        raise ApiError(409, "conflict", f"too late to cancel: the email is {email.status}")
    db().commit()
    db().refresh(email)
    return _out(email).model_dump(mode="json")
