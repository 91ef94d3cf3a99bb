"""API v1: the team's prospects: list (search, pages), one, and changing one.

    GET   /prospects?q=&after_id=&limit=   oldest first; q matches address, name or company
    GET   /prospects/{id}
    PATCH /prospects/{id} {name, company, time_zone, do_not_track}

The same rules as the prospect page (`web.app.prospects`): names and companies
are folded onto one line and may not carry characters a subject line refuses;
a time zone is an IANA name (null forgets it, and the address's domain speaks
again, `worker.sequences.send_windows.set_zone`). Erasing is
`POST /prospects/erase` (web/api/privacy.py): it takes the address, not an id.
"""

from __future__ import annotations

from datetime import datetime

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func, select

from core.header_text import check_header_text
from core.models import Enrollment, Prospect
from core.zones.names import ZoneError
from web.api.common import PAGE_DEFAULT, PAGE_MAX, ApiError, id_page, parse_body, parse_query
from web.api.operations import operation
from web.api.routes import owned
from web.api.schemas import MAX_ID, Request, Response
from web.app.prospects import NAME_LIMIT, SEARCH_LIMIT, search_filter
from web.db import db
from worker.sequences.send_windows import set_zone


class ProspectQuery(BaseModel):
    q: str | None = Field(
        default=None, max_length=SEARCH_LIMIT, description="part of the address, name or company"
    )
    after_id: int = Field(default=0, ge=0, le=MAX_ID, description="the last id of the page before")
    limit: int = Field(default=PAGE_DEFAULT, ge=1, le=PAGE_MAX)


def _one_line(value: str | None) -> str | None:
    if value is None:
        return None
    folded = " ".join(value.split())
    return check_header_text(folded) or None


class ProspectUpdate(Request):
    name: str | None = Field(
        default=None, max_length=NAME_LIMIT, description="null or '' clears it"
    )
    company: str | None = Field(
        default=None, max_length=NAME_LIMIT, description="null or '' clears it"
    )
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA name (Europe/Berlin); null forgets it: guessed again from the address, "
        "else the sequence's",
    )
    do_not_track: bool | None = Field(
        default=None, description="no pixel and no rewritten links in mail to them"
    )

    _text = field_validator("name", "company")(_one_line)


class ProspectOut(Response):
    id: int
    email: str
    name: str | None
    company: str | None
    time_zone: str | None = Field(description="null: the sequence's zone applies")
    time_zone_source: str | None
    time_zone_note: str | None
    do_not_track: bool
    opted_out_at: datetime | None
    undeliverable_at: datetime | None
    created_at: datetime
    enrollments: int = Field(description="how many enrollments the prospect has had")


class ProspectList(Response):
    prospects: list[ProspectOut]
    next_after_id: int | None = Field(description="pass as ?after_id= for the next page")


def _out(prospects: list[Prospect]) -> list[ProspectOut]:
    ids = [p.id for p in prospects]
    counts = {
        int(prospect_id): int(count)
        for prospect_id, count in db().execute(
            select(Enrollment.prospect_id, func.count())
            .where(Enrollment.prospect_id.in_(ids))
            .group_by(Enrollment.prospect_id)
        )
    }
    return [
        ProspectOut(
            id=p.id,
            email=p.email,
            name=p.name,
            company=p.company,
            time_zone=p.time_zone,
            time_zone_source=p.time_zone_source,
            time_zone_note=p.time_zone_note,
            do_not_track=p.do_not_track,
            opted_out_at=p.opted_out_at,
            undeliverable_at=p.undeliverable_at,
            created_at=p.created_at,
            enrollments=counts.get(p.id, 0),
        )
        for p in prospects
    ]


@operation(
    "GET",
    "/prospects",
    summary="The team's prospects, oldest first; q searches address, name and company",
    response=ProspectList,
    query=ProspectQuery,
)
def list_prospects() -> ResponseReturnValue:
    args = parse_query(ProspectQuery)
    query = select(Prospect).where(Prospect.team_id == g.team_id)
    if args.q and args.q.strip():
        query = query.where(search_filter(args.q.strip()))
    rows, next_after_id = id_page(query, Prospect.id, args.after_id, args.limit)
    body = ProspectList(prospects=_out(rows), next_after_id=next_after_id)
    return body.model_dump(mode="json")


@operation("GET", "/prospects/<int:prospect_id>", summary="A prospect", response=ProspectOut)
def get_prospect(prospect_id: int) -> ResponseReturnValue:
    prospect = owned(Prospect, prospect_id, "prospect")
    return _out([prospect])[0].model_dump(mode="json")


@operation(
    "PATCH",
    "/prospects/<int:prospect_id>",
    summary="Change a prospect's name, company, time zone or do-not-track",
    body=ProspectUpdate,
    response=ProspectOut,
)
def update_prospect(prospect_id: int) -> ResponseReturnValue:
    prospect = owned(Prospect, prospect_id, "prospect")
    body = parse_body(ProspectUpdate)
    given = body.model_fields_set
    if "time_zone" in given:
        try:
            set_zone(prospect, body.time_zone or None)
        except ZoneError as exc:
            db().rollback()
            raise ApiError(
                422, "invalid_request", f"time_zone: {exc}", {"time_zone": str(exc)}
            ) from None
    if "name" in given:
        prospect.name = body.name
    if "company" in given:
        prospect.company = body.company
    if body.do_not_track is not None:
        prospect.do_not_track = body.do_not_track
    db().commit()
    return _out([prospect])[0].model_dump(mode="json")
