"""`POST /api/v1/preview`: a subject and body filled in for a prospect, gaps listed.

What the editors' live preview shows (`web.app.preview.build_preview`, the same
sanitising and placeholder rules as sending), for a script that writes steps or
emails through the API and wants to know before it saves whether a prospect
lacks a value or a placeholder is misspelt.
"""

from __future__ import annotations

from flask import jsonify
from flask.typing import ResponseReturnValue
from pydantic import Field

from core.templates import plain_to_html
from web.api.common import ApiError, parse_body
from web.api.operations import operation
from web.api.schemas import Request, Response
from web.app.preview import (
    BODY_LIMIT,
    SUBJECT_LIMIT,
    build_preview,
    find_prospect,
    owned_mailbox,
    person_for,
    team_mailboxes,
)


class PreviewRequest(Request):
    subject: str = Field(default="", max_length=SUBJECT_LIMIT)
    body: str = Field(
        default="", max_length=BODY_LIMIT, description="plain text or HTML, as an editor sends it"
    )
    mailbox_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="the sender; default: the first active one"
    )
    prospect: str | None = Field(
        default=None, max_length=320, description="the team's prospect, by id or email address"
    )
    to: str | None = Field(
        default=None,
        max_length=2000,
        description="a To field: its first address stands in when no prospect is named",
    )


class PreviewOut(Response):
    subject: str
    document: str = Field(description="the body as an HTML document (show it sandboxed)")
    missing: list[str]
    unknown: list[str]
    problems: list[str]
    prospect: str | None


@operation(
    "POST",
    "/preview",
    summary="A subject and body filled in for a prospect, missing values and unknown "
    "placeholders listed",
    body=PreviewRequest,
    response=PreviewOut,
)
def preview() -> ResponseReturnValue:
    wanted = parse_body(PreviewRequest)
    mailbox = None
    if wanted.mailbox_id is not None:
        mailbox = owned_mailbox(str(wanted.mailbox_id))
        if mailbox is None:
            message = f"mailbox {wanted.mailbox_id} not found"
            raise ApiError(422, "invalid_request", message, {"mailbox_id": message})
    else:
        mailboxes = team_mailboxes()
        mailbox = mailboxes[0] if mailboxes else None
    prospect = find_prospect(wanted.prospect)
    if wanted.prospect and prospect is None:
        message = f"no prospect {wanted.prospect} in this team"
        raise ApiError(422, "invalid_request", message, {"prospect": message})
    if prospect is None and wanted.to:
        prospect = person_for(wanted.to)
    result = build_preview(wanted.subject, plain_to_html(wanted.body), prospect, mailbox)
    return jsonify(PreviewOut.model_validate(result.as_json()).model_dump(mode="json"))
