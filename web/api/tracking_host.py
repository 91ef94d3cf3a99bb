"""API v1: the team's tracking host (``/team/tracking-host``).

    GET    /team/tracking-host            the host, its status and the CNAME target
    PUT    /team/tracking-host {host}     set it (pending until verified); 422 names what is wrong
    POST   /team/tracking-host/verify     check DNS now: verified, or failed with the reason
    DELETE /team/tracking-host            remove it: links go back to the service's own host

What is checked, and why, is `core.tracking_domains`; the settings page does the
same through the same functions. Reading is everyone's; changing it is admins'
(`web.roles`), as on the page.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from core import tracking_domains
from core.models import Team
from core.outbound import OutboundError
from web.api.common import ApiError, parse_body
from web.api.operations import operation
from web.api.schemas import Request
from web.db import db
from web.roles import ADMIN_ONLY_ERROR, admin_required


class TrackingHostSet(Request):
    host: str = Field(min_length=1, max_length=253, description="e.g. track.example.com")


class TrackingHostOut(BaseModel):
    host: str | None
    status: tracking_domains.HostStatus = Field(
        description="none, pending (not checked yet), verified (used in emails sent from now "
        "on), failed (see error)"
    )
    error: str | None = Field(description="why the last check failed")
    verified_at: datetime | None
    checked_at: datetime | None
    cname_target: str = Field(description="the name to make the host a CNAME record of")


def tracking_host_out(team: Team) -> dict[str, Any]:
    return TrackingHostOut(
        host=team.tracking_host,
        status=tracking_domains.status(team),
        error=team.tracking_host_error,
        verified_at=team.tracking_host_verified_at,
        checked_at=team.tracking_host_checked_at,
        cname_target=tracking_domains.targets()[0].lstrip("."),
    ).model_dump(mode="json")


@operation(
    "GET",
    "/team/tracking-host",
    summary="The team's tracking host and its status",
    response=TrackingHostOut,
)
def get_tracking_host() -> ResponseReturnValue:
    return tracking_host_out(db().get_one(Team, g.team_id))


@operation(
    "PUT",
    "/team/tracking-host",
    summary="Set the team's tracking host (pending until verified)",
    body=TrackingHostSet,
    response=TrackingHostOut,
    errors={422: "Invalid host (the message says what is wrong with it)", 403: ADMIN_ONLY_ERROR},
)
@admin_required
def set_tracking_host() -> ResponseReturnValue:
    body = parse_body(TrackingHostSet)
    team = db().get_one(Team, g.team_id)
    try:
        tracking_domains.set_host(db(), team, body.host)
    except OutboundError as exc:
        raise ApiError(422, "invalid_host", str(exc), {"host": str(exc)}) from None
    db().commit()
    return tracking_host_out(team)


@operation(
    "POST",
    "/team/tracking-host/verify",
    summary="Check the host's DNS now: verified, or failed with the reason",
    response=TrackingHostOut,
    errors={404: "No tracking host is set", 403: ADMIN_ONLY_ERROR},
)
@admin_required
def verify_tracking_host() -> ResponseReturnValue:
    team = db().get_one(Team, g.team_id)
    if not team.tracking_host:
        raise ApiError(404, "not_found", "no tracking host is set: PUT one first")
    tracking_domains.verify(team)
    db().commit()
    return tracking_host_out(team)


@operation(
    "DELETE",
    "/team/tracking-host",
    summary="Remove the team's tracking host",
    status=204,
    response_description="Removed",
    errors={403: ADMIN_ONLY_ERROR},
)
@admin_required
def remove_tracking_host() -> ResponseReturnValue:
    team = db().get_one(Team, g.team_id)
    tracking_domains.remove_host(team)
    db().commit()
    return "", 204
