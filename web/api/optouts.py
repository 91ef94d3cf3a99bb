"""API v1: the opt-out list (``/opt-outs``) and the team's settings (``/team``).

    GET    /opt-outs?before=&limit=       the list, newest first (keyset pages by prospect id)
    POST   /opt-outs {email, reason}      add: 201, or 200 when it already was on the list
    DELETE /opt-outs/{prospect_id}        remove: 204; 404 when not the team's or not listed
    GET    /opt-outs/changes?before=      every change: who, when, why (newest first)
    GET    /team, PATCH /team             the team's settings (unsubscribe headers)

Adding and removing go through `worker.sequences.optouts`, the same path as the
page and the unsubscribe endpoint. Any token of the team may add; removing an
address and changing the team's settings are admins' (`web.roles`), as on the pages.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select

from core.header_text import check_header_text
from core.models import OptOutSource, Prospect, Team, utcnow
from web.api.common import PAGE_DEFAULT, PAGE_MAX, ApiError, int_arg, parse_body
from web.api.operations import Answer, Query, operation
from web.api.schemas import Request, check_email
from web.app.optouts import ChangeView, added_by, changes
from web.db import db
from web.roles import ADMIN_ONLY_ERROR, admin_required
from worker.sequences import optouts


class OptOutCreate(Request):
    email: str = Field(max_length=320)
    reason: str = Field(min_length=1, max_length=optouts.REASON_LIMIT)

    _email = field_validator("email")(check_email)
    _reason = field_validator("reason")(check_header_text)


class OptOutOut(BaseModel):
    prospect_id: int
    email: str
    opted_out_at: datetime
    reason: str | None
    added_by: str | None = Field(
        description="a teammate's name, or how the recipient asked; null if not recorded"
    )


class OptOutList(BaseModel):
    opt_outs: list[OptOutOut]
    next_before: int | None = Field(description="pass as ?before= for the next page")


class OptOutChangeOut(BaseModel):
    id: int
    prospect_id: int
    email: str
    action: str = Field(description='"added" or "removed"')
    source: str = Field(description="link, one_click, reply, complaint, page or api")
    reason: str | None
    by: str
    at: datetime


class OptOutChangeList(BaseModel):
    changes: list[OptOutChangeOut]
    next_before: int | None


class TeamOut(BaseModel):
    id: int
    name: str
    unsubscribe_headers: bool = Field(
        description="List-Unsubscribe and List-Unsubscribe-Post on sequence emails"
    )
    tracking_enabled: bool


class TeamUpdate(Request):
    unsubscribe_headers: bool | None = None
    tracking_enabled: bool | None = Field(
        default=None,
        description="tracking on by default: opens and clicks in new emails and sequences "
        "that do not choose for themselves",
    )


def _entries(prospects: list[Prospect]) -> list[OptOutOut]:
    by = added_by(db(), g.team_id, [p.id for p in prospects])
    out = []
    for p in prospects:
        assert p.opted_out_at is not None
        change = by.get(p.id)
        out.append(
            OptOutOut(
                prospect_id=p.id,
                email=p.email,
                opted_out_at=p.opted_out_at,
                reason=p.opted_out_reason,
                added_by=change.by if change else None,
            )
        )
    return out


@operation(
    "GET",
    "/opt-outs",
    summary="The team's opt-out list, newest first",
    response=OptOutList,
    query=[Query("before"), Query("limit", maximum=PAGE_MAX)],
)
def list_opt_outs() -> ResponseReturnValue:
    before = int_arg("before")
    limit = int_arg("limit", default=PAGE_DEFAULT, maximum=PAGE_MAX) or PAGE_DEFAULT
    query = select(Prospect).where(
        Prospect.team_id == g.team_id, Prospect.opted_out_at.is_not(None)
    )
    if before is not None:
        query = query.where(Prospect.id < before)
    rows = list(db().scalars(query.order_by(Prospect.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    body = OptOutList(opt_outs=_entries(rows), next_before=rows[-1].id if more else None)
    return body.model_dump(mode="json")


@operation(
    "POST",
    "/opt-outs",
    summary="Put an address on the opt-out list (its live enrolments end)",
    body=OptOutCreate,
    answers=[
        Answer(201, OptOutOut, "Added"),
        Answer(200, OptOutOut, "Already on the list"),
    ],
)
def add_opt_out() -> ResponseReturnValue:
    body = parse_body(OptOutCreate)
    result = optouts.opt_out(
        db(),
        team_id=g.team_id,
        email=body.email,
        reason=body.reason,
        source=OptOutSource.API,
        now=utcnow(),
        user_id=g.user.id,
    )
    db().commit()
    prospect = db().get_one(Prospect, result.prospect_id)
    return _entries([prospect])[0].model_dump(mode="json"), 201 if result.added else 200


@operation(
    "DELETE",
    "/opt-outs/<int:prospect_id>",
    summary="Take an address off the opt-out list",
    status=204,
    response_description="Removed",
    errors={404: "Not on the team's opt-out list (or not your team's)", 403: ADMIN_ONLY_ERROR},
)
@admin_required
def remove_opt_out(prospect_id: int) -> ResponseReturnValue:
    removed = optouts.remove(
        db(),
        team_id=g.team_id,
        prospect_id=prospect_id,
        source=OptOutSource.API,
        now=utcnow(),
        user_id=g.user.id,
    )
    if not removed:
        raise ApiError(404, "not_found", f"prospect {prospect_id} is not on the opt-out list")
    db().commit()
    return "", 204


@operation(
    "GET",
    "/opt-outs/changes",
    summary="Every change to the opt-out list: who, when, why; newest first",
    response=OptOutChangeList,
    query=[Query("before", maximum=2**63 - 1), Query("limit", maximum=PAGE_MAX)],
)
def list_opt_out_changes() -> ResponseReturnValue:
    before = int_arg("before", maximum=2**63 - 1)
    limit = int_arg("limit", default=PAGE_DEFAULT, maximum=PAGE_MAX) or PAGE_DEFAULT
    found = changes(db(), g.team_id, limit=limit + 1, before=before)
    more = len(found) > limit
    found = found[:limit]
    body = OptOutChangeList(
        changes=[_change_out(c) for c in found], next_before=found[-1].id if more else None
    )
    return body.model_dump(mode="json")


def _change_out(change: ChangeView) -> OptOutChangeOut:
    return OptOutChangeOut(**change.__dict__)


def _team_out(team: Team) -> dict[str, Any]:
    return TeamOut(
        id=team.id,
        name=team.name,
        unsubscribe_headers=team.unsubscribe_headers,
        tracking_enabled=team.tracking_enabled,
    ).model_dump(mode="json")


@operation("GET", "/team", summary="The team's settings", response=TeamOut)
def get_team() -> ResponseReturnValue:
    return _team_out(db().get_one(Team, g.team_id))


@operation(
    "PATCH",
    "/team",
    summary="Change the team's settings",
    body=TeamUpdate,
    response=TeamOut,
    errors={403: ADMIN_ONLY_ERROR},
)
@admin_required
def update_team() -> ResponseReturnValue:
    body = parse_body(TeamUpdate)
    team = db().get_one(Team, g.team_id)
    if body.unsubscribe_headers is not None:
        team.unsubscribe_headers = body.unsubscribe_headers
    if body.tracking_enabled is not None:
        team.tracking_enabled = body.tracking_enabled
    db().commit()
    return _team_out(team)
