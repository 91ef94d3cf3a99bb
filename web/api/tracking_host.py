"""API v1: the team's tracking host (``/team/tracking-host``).

    GET    /team/tracking-host            the host, its status and the CNAME target
    PUT    /team/tracking-host {host}     set it (pending until verified); 422 names what is wrong
    POST   /team/tracking-host/verify     check DNS now: verified, or failed with the reason
    DELETE /team/tracking-host            remove it: links go back to the service's own host

What is checked, and why, is `core.tracking_domains`; the settings page does the
same through the same functions. Roles do not exist yet: any token of the team
may change it.
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
from web.api.common import ApiError, bp, parse_body, require_token
from web.api.openapi_parts import add_schemas, error_responses, json_content
from web.api.schemas import Request
from web.db import db


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


@bp.get("/team/tracking-host")
@require_token
def get_tracking_host() -> ResponseReturnValue:
    return tracking_host_out(db().get_one(Team, g.team_id))


@bp.put("/team/tracking-host")
@require_token
def set_tracking_host() -> ResponseReturnValue:
    body = parse_body(TrackingHostSet)
    team = db().get_one(Team, g.team_id)
    try:
        tracking_domains.set_host(db(), team, body.host)
    except OutboundError as exc:
        raise ApiError(422, "invalid_host", str(exc), {"host": str(exc)}) from None
    db().commit()
    return tracking_host_out(team)


@bp.post("/team/tracking-host/verify")
@require_token
def verify_tracking_host() -> ResponseReturnValue:
    team = db().get_one(Team, g.team_id)
    if not team.tracking_host:
        raise ApiError(404, "not_found", "no tracking host is set: PUT one first")
    tracking_domains.verify(team)
    db().commit()
    return tracking_host_out(team)


@bp.delete("/team/tracking-host")
@require_token
def remove_tracking_host() -> ResponseReturnValue:
    team = db().get_one(Team, g.team_id)
    tracking_domains.remove_host(team)
    db().commit()
    return "", 204


_ERRORS = {
    400: "Body is not valid JSON",
    401: "Missing or unknown API token",
    404: "No tracking host is set",
    415: "Body is not JSON",
    422: "Invalid host (the message says what is wrong with it)",
}


def _ok(*errors: int) -> dict[str, Any]:
    return {
        "200": {"description": "OK", "content": json_content("TrackingHostOut")},
        **error_responses(_ERRORS, 401, *errors),
    }


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """Add the tracking host's routes and schemas to the OpenAPI document."""
    add_schemas(
        document,
        (TrackingHostSet, TrackingHostOut),
        lambda m: "validation" if m is TrackingHostSet else "serialization",
    )
    document["paths"]["/team/tracking-host"] = {
        "get": {"summary": "The team's tracking host and its status", "responses": _ok()},
        "put": {
            "summary": "Set the team's tracking host (pending until verified)",
            "requestBody": {"required": True, "content": json_content("TrackingHostSet")},
            "responses": _ok(400, 415, 422),
        },
        "delete": {
            "summary": "Remove the team's tracking host",
            "responses": {"204": {"description": "Removed"}, **error_responses(_ERRORS, 401)},
        },
    }
    document["paths"]["/team/tracking-host/verify"] = {
        "post": {
            "summary": "Check the host's DNS now: verified, or failed with the reason",
            "responses": _ok(404),
        }
    }
    return document
