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

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import Field, field_validator
from sqlalchemy import select

from core.erasure import ERASED_MESSAGE, is_erased
from core.models import Prospect, utcnow
from web.api.common import ApiError, parse_body
from web.api.operations import operation
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


@operation(
    "POST",
    "/prospects/erase",
    summary="Erase a person (GDPR art. 17); keep only a keyed hash of the address so they "
    "are never written to again",
    body=ErasureCreate,
    response=ErasureOut,
    response_description="Erased: what was removed, what stays in Salesforce",
    errors={422: "Invalid field (named in error.fields), or the person was erased"},
)
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


@operation(
    "POST",
    "/prospects/do-not-track",
    summary="No pixel and no rewritten links in mail to this person",
    body=DoNotTrackSet,
    response=DoNotTrackOut,
    response_description="Set",
    errors={422: "Invalid field (named in error.fields), or the person was erased"},
)
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
