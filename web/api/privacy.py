"""API v1: erase a person, and "do not track" for one.

`POST /prospects/erase` erases everything the team holds about an address
(`worker.erasure`) and answers what was removed and what stays in Salesforce;
from then on enrolling, importing or composing to the address is refused.
`POST /prospects/do-not-track` sets or clears the flag for an address (the
prospect is created if the team has never written to them, so the wish holds
from the first email).

Both take the address, not an id: an erasure request names a person by their
address. Neither logs it.
"""

from __future__ import annotations

from typing import Any

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from core.erasure import ERASED_MESSAGE, is_erased
from core.models import Prospect, utcnow
from web.api.common import ApiError, bp, parse_body, require_token
from web.api.openapi_parts import add_schemas, error_responses, json_content
from web.api.schemas import Request, Response, check_email
from web.db import db
from worker.erasure import erase_person


class ErasureCreate(Request):
    email: str = Field(min_length=3, max_length=320, description="The person's address")

    _email = field_validator("email")(check_email)


class ErasureOut(Response):
    erased: bool
    prospect_found: bool
    deleted: dict[str, int] = Field(description="Rows deleted, by table")
    mentions_replaced: int = Field(description="Rows whose text named them, now '[erased]'")
    salesforce_tasks: list[str] = Field(description="Tasks already in Salesforce: they stay")
    salesforce_in_flight: int
    salesforce_not_written: int
    salesforce: str = Field(description="What stays in Salesforce, in words")


class DoNotTrackSet(Request):
    email: str = Field(min_length=3, max_length=320)
    do_not_track: bool

    _email = field_validator("email")(check_email)


class DoNotTrackOut(Response):
    prospect_id: int
    email: str
    do_not_track: bool


MODELS: list[type[BaseModel]] = [ErasureCreate, ErasureOut, DoNotTrackSet, DoNotTrackOut]


@bp.post("/prospects/erase")
@require_token
def erase() -> ResponseReturnValue:
    body = parse_body(ErasureCreate)
    report = erase_person(
        db(), team_id=g.team_id, email=body.email, user_id=g.user.id, now=utcnow()
    )
    db().commit()
    return ErasureOut(
        erased=True,
        prospect_found=report.prospect_found,
        deleted={k: v for k, v in sorted(report.deleted.items()) if v},
        mentions_replaced=report.mentions_replaced,
        salesforce_tasks=report.salesforce_tasks,
        salesforce_in_flight=report.salesforce_in_flight,
        salesforce_not_written=report.salesforce_dropped,
        salesforce=report.salesforce_note(),
    ).model_dump(mode="json")


@bp.post("/prospects/do-not-track")
@require_token
def do_not_track() -> ResponseReturnValue:
    body = parse_body(DoNotTrackSet)
    email = body.email.lower()
    if is_erased(db(), g.team_id, email):
        raise ApiError(422, "erased", f"email: {ERASED_MESSAGE}", {"email": ERASED_MESSAGE})
    prospect = db().scalar(
        select(Prospect).where(Prospect.team_id == g.team_id, Prospect.email == email)
    )
    if prospect is None:
        prospect = Prospect(team_id=g.team_id, email=email, created_at=utcnow())
        db().add(prospect)
    prospect.do_not_track = body.do_not_track
    db().commit()
    return DoNotTrackOut(
        prospect_id=prospect.id, email=prospect.email, do_not_track=prospect.do_not_track
    ).model_dump(mode="json")


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """Add these routes and their schemas to the OpenAPI document."""
    add_schemas(
        document,
        MODELS,
        lambda model: "serialization" if issubclass(model, Response) else "validation",
    )
    errors = error_responses(
        {
            400: "Body is not valid JSON",
            401: "Missing or unknown API token",
            415: "Body is not JSON",
            422: "Invalid field (named in error.fields), or the person was erased",
        },
        400,
        401,
        415,
        422,
    )
    document["paths"].update(
        {
            "/prospects/erase": {
                "post": {
                    "summary": "Erase a person (GDPR art. 17); keep only a keyed hash of the "
                    "address so they are never written to again",
                    "requestBody": {"required": True, "content": json_content("ErasureCreate")},
                    "responses": {
                        "200": {
                            "description": "Erased: what was removed, what stays in Salesforce",
                            "content": json_content("ErasureOut"),
                        },
                        **errors,
                    },
                }
            },
            "/prospects/do-not-track": {
                "post": {
                    "summary": "No pixel and no rewritten links in mail to this person",
                    "requestBody": {"required": True, "content": json_content("DoNotTrackSet")},
                    "responses": {
                        "200": {"description": "Set", "content": json_content("DoNotTrackOut")},
                        **errors,
                    },
                }
            },
        }
    )
    return document
