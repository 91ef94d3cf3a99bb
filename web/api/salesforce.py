"""API v1 for Salesforce: connect an org, settings, API usage, dead letters and replay.

    POST   /salesforce/connect              oauth → authorize_url (a one-time start link on
                                            this site, for the same user, signed in, to open);
                                            jwt, password → connection
    GET    /salesforce/oauth/callback       where Salesforce sends the person back (no token):
                                            handed on to /connect/salesforce/callback, where
                                            web.oauth_pages checks the browser and person and
                                            asks them to confirm the org
    GET    /salesforce/connection           the team's org (or the default one) and settings
    DELETE /salesforce/connection           disconnect the team's own org (writes are held)
    PATCH  /salesforce/settings             budget_share (1-100 %), create_leads
    GET    /salesforce/usage                the org's daily API usage as Salesforce reports it,
                                            whether engagement is deferred, the queue
    GET    /salesforce/dead-letters         what Salesforce refused, with its error
    POST   /salesforce/dead-letters/replay  put them back in the queue

The Salesforce page (web.app.salesforce_page) does the same for an admin in the
browser; its status and usage refresh are web.api.salesforce_admin's operations.
Errors follow the API's conventions: 422 names the field; a refusal by
Salesforce is 422 `salesforce_refused`; Salesforce unreachable is 502. No
route returns a token, a password or a secret.

`worker.salesforce.connections` (and through it simple-salesforce) is imported
inside the routes that need it: it costs the web process 8 MiB RSS (7.4 MiB the
client, 1 MiB the rest, measured after create_app), paid only once someone uses
these routes, not by every web process that only serves the pixel and pages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from flask import g, request
from flask.typing import ResponseReturnValue
from pydantic import Field, model_validator
from sqlalchemy import func, select

from core.models import OutboxStatus, SalesforceConnection, SalesforceOutbox
from web import oauth_pages
from web.api.common import ApiError, int_arg, parse_body
from web.api.operations import Answer, Query, operation
from web.api.schemas import MAX_ID, Request, Response
from web.db import db
from web.roles import ADMIN_ONLY_ERROR, admin_required
from web.salesforce_connect import KIND as ORG_FLOW
from web.salesforce_connect import start_flow
from worker.salesforce.budget import OrgBudget
from worker.salesforce.outbox_replay import dead_letters, replay_failed

DEAD_LETTER_PAGE = 500


class SalesforceConnect(Request):
    kind: Literal["oauth", "jwt", "password"]
    login_url: str | None = Field(
        default=None,
        max_length=500,
        description="https://login.salesforce.com (default), https://test.salesforce.com "
        "for a sandbox, or the org's My Domain (https://<name>.my.salesforce.com, "
        "https://<name>--<sandbox>.sandbox.my.salesforce.com ...); no other host",
    )
    username: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1000)
    security_token: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _needs(self) -> SalesforceConnect:
        if self.kind in ("jwt", "password") and not self.username:
            raise ValueError(f"username: required for kind {self.kind}")
        if self.kind == "password" and not self.password:
            raise ValueError("password: required for kind password")
        return self


class SalesforceSettingsUpdate(Request):
    budget_share: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="Percent of the org's daily API allowance above which engagement "
        "updates wait (sends and replies never do)",
    )
    create_leads: bool | None = Field(
        default=None, description="Create a Lead for a recipient Salesforce does not know"
    )


class ReplayRequest(Request):
    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        default=None, min_length=1, max_length=1000
    )
    all: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> ReplayRequest:
        if (self.ids is None) == (not self.all):
            raise ValueError('ids: give the dead letters\' ids, or "all": true')
        return self


class AuthorizeOut(Response):
    authorize_url: str = Field(
        description="A one-time start link on this site: the same user opens it in a browser, "
        "signed in to Sightline; it goes on to Salesforce, and the connect is finished (and "
        "confirmed) in that browser only"
    )


class SalesforceConnectionOut(Response):
    kind: str
    status: str
    status_reason: str | None
    ready: bool
    login_url: str | None
    instance_url: str | None
    org_id: str | None
    username: str | None
    connected_at: datetime | None
    budget_share: int
    create_leads: bool


class ApiUsageOut(Response):
    used: int
    max: int
    share_percent: float
    as_of: datetime


class SalesforceUsageOut(Response):
    org: str
    api_usage: ApiUsageOut | None = Field(
        description="From the Sforce-Limit-Info header of the latest response (whole org, "
        "rolling 24 hours); null until Sightline has called the org"
    )
    budget_share: int
    engagement_deferred: bool
    parked_until: datetime | None
    parked_reason: str | None
    calls_today: int = Field(description="API calls Sightline made to this org today (UTC)")
    outbox: dict[str, int]


class DeadLetterOut(Response):
    id: int
    kind: str
    who_email: str
    subject: str | None
    last_error: str | None
    attempts: int
    created_at: datetime


class DeadLetterList(Response):
    dead_letters: list[DeadLetterOut]
    next_after_id: int | None


class ReplayOut(Response):
    replayed: int


CONNECTION = Answer(200, SalesforceConnectionOut, "The team's org and settings")


def _salesforce_error(exc: Exception) -> ApiError:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
    from worker.salesforce.client import SalesforceError

    assert isinstance(exc, SalesforceError)
    if exc.kind in ("auth", "rejected"):
        return ApiError(422, "salesforce_refused", str(exc), {"credentials": str(exc)})
    return ApiError(502, "salesforce_unreachable", str(exc))


def _connection_out(team_id: int) -> dict[str, Any]:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
    from worker.salesforce.connections import DEFAULT_BUDGET_SHARE, load_profile

    row = db().scalar(select(SalesforceConnection).where(SalesforceConnection.team_id == team_id))
    profile = load_profile(team_id)
    out = SalesforceConnectionOut(
        kind=profile.auth_kind,
        status=row.status if row is not None else "active",
        status_reason=profile.reason,
        ready=profile.ready,
        login_url=row.login_url if row is not None else None,
        instance_url=row.instance_url if row is not None else None,
        org_id=row.org_id if row is not None else None,
        username=row.username if row is not None else None,
        connected_at=row.connected_at if row is not None else None,
        budget_share=row.budget_share if row is not None else DEFAULT_BUDGET_SHARE,
        create_leads=bool(row.create_leads) if row is not None else False,
    )
    return out.model_dump(mode="json")


@operation(
    "POST",
    "/salesforce/connect",
    summary="Connect the team's own Salesforce org",
    body=SalesforceConnect,
    answers=[
        Answer(
            200,
            AuthorizeOut,
            "oauth: the same user opens authorize_url, signed in to Sightline, and confirms "
            "the org there",
        ),
        Answer(201, SalesforceConnectionOut, "The team's org and settings"),
    ],
    errors={
        403: "Admins only (`admin_only`), or not allowed by the operator (jwt: the "
        "username is not listed for this team)",
        422: "Invalid field (named in error.fields), or Salesforce refused",
        502: "Salesforce unreachable",
    },
)
@admin_required
def salesforce_connect() -> ResponseReturnValue:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
    from worker.salesforce.client import SalesforceError
    from worker.salesforce.connections import ConnectError, connect_jwt, connect_password

    body = parse_body(SalesforceConnect)
    try:
        if body.kind == "oauth":
            url = start_flow(g.team_id, g.user.id, body.login_url)
            return AuthorizeOut(authorize_url=url).model_dump(mode="json")
        if body.kind == "jwt":
            assert body.username is not None
            connect_jwt(g.team_id, body.username, body.login_url)
        else:
            assert body.username is not None and body.password is not None
            connect_password(
                g.team_id, body.username, body.password, body.security_token or "", body.login_url
            )
    except ConnectError as exc:
        code = "forbidden" if exc.status == 403 else "invalid_request"
        raise ApiError(exc.status, code, str(exc), {exc.field: exc.reason}) from None
    except SalesforceError as exc:
        raise _salesforce_error(exc) from None
    return _connection_out(g.team_id), 201


@operation(
    "GET",
    "/salesforce/oauth/callback",
    summary="Salesforce's redirect after approval: handed on (303) to "
    "/connect/salesforce/callback, which only the browser and user that opened the start link "
    "can finish, and which asks them to confirm the org",
    query=[
        Query(name, schema={"type": "string"})
        for name in ("code", "state", "error", "error_description")
    ],
    answers=[
        Answer(303, None, "On to /connect/salesforce/callback (a page)", json=False),
        Answer(400, None, "Too many or too long parameters (a page)", json=False),
    ],
    public=True,
)
def salesforce_oauth_callback() -> ResponseReturnValue:
    """Salesforce sends the person here after they approve (or refuse) the connection.

    This path is the Connected App's registered callback, outside the flow
    cookie's path: the answer is parked and the browser sent on to
    /connect/salesforce/callback (web.oauth_pages), where the cookie comes along.
    """
    return oauth_pages.relay(ORG_FLOW, request.args)


@operation(
    "GET",
    "/salesforce/connection",
    summary="The team's Salesforce org and settings",
    answers=[CONNECTION],
)
def salesforce_connection() -> ResponseReturnValue:
    return _connection_out(g.team_id)


@operation(
    "DELETE",
    "/salesforce/connection",
    summary="Disconnect the team's own org (its writes are held, not lost)",
    status=204,
    response_description="Disconnected",
    errors={404: "This team has not connected an org of its own", 403: ADMIN_ONLY_ERROR},
)
@admin_required
def salesforce_disconnect() -> ResponseReturnValue:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
    from worker.salesforce.connections import disconnect

    if not disconnect(g.team_id):
        raise ApiError(404, "not_found", "this team has not connected an org of its own")
    return "", 204


@operation(
    "PATCH",
    "/salesforce/settings",
    summary="Budget share and lead creation",
    body=SalesforceSettingsUpdate,
    answers=[CONNECTION],
    errors={403: ADMIN_ONLY_ERROR},
)
@admin_required
def salesforce_settings() -> ResponseReturnValue:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
    from worker.salesforce.connections import update_settings

    body = parse_body(SalesforceSettingsUpdate)
    update_settings(g.team_id, budget_share=body.budget_share, create_leads=body.create_leads)
    return _connection_out(g.team_id)


@operation(
    "GET",
    "/salesforce/usage",
    summary="The org's daily API usage, deferral, parking and the queue",
    response=SalesforceUsageOut,
)
def salesforce_usage() -> ResponseReturnValue:
    # lazy import: simple-salesforce costs the web process 8 MiB RSS (module docstring).
    from worker.salesforce.connections import load_profile

    profile = load_profile(g.team_id)
    budget = OrgBudget(profile.org_key)
    usage = budget.usage()
    parked = budget.parked()
    counts = dict.fromkeys(
        [s.value for s in OutboxStatus],
        0,
    )
    for status, count in db().execute(
        select(SalesforceOutbox.status, func.count())
        .where(SalesforceOutbox.team_id == g.team_id)
        .group_by(SalesforceOutbox.status)
    ):
        counts[str(status)] = int(count)
    out = SalesforceUsageOut(
        org=profile.org_key,
        api_usage=ApiUsageOut(
            used=usage.used,
            max=usage.max,
            share_percent=round(usage.share * 100, 2),
            as_of=datetime.fromtimestamp(usage.at, UTC),
        )
        if usage is not None
        else None,
        budget_share=profile.budget_share,
        engagement_deferred=usage is not None and usage.share * 100 >= profile.budget_share,
        parked_until=datetime.fromtimestamp(parked.until, UTC) if parked else None,
        parked_reason=parked.reason if parked else None,
        calls_today=budget.calls_today(),
        outbox=counts,
    )
    return out.model_dump(mode="json")


@operation(
    "GET",
    "/salesforce/dead-letters",
    summary="Writes Salesforce refused, oldest first",
    response=DeadLetterList,
    query=[Query("after_id", minimum=0), Query("limit", maximum=DEAD_LETTER_PAGE)],
)
def salesforce_dead_letters() -> ResponseReturnValue:
    after_id = int_arg("after_id", default=0, minimum=0) or 0
    limit = int_arg("limit", default=100, minimum=1, maximum=DEAD_LETTER_PAGE) or 100
    rows = dead_letters(db(), g.team_id, after_id=after_id, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    out = DeadLetterList(
        dead_letters=[
            DeadLetterOut(
                id=r.id,
                kind=r.kind,
                who_email=r.who_email,
                subject=str(r.payload.get("subject")) if r.payload.get("subject") else None,
                last_error=r.last_error,
                attempts=r.attempts,
                created_at=r.created_at,
            )
            for r in rows
        ],
        next_after_id=rows[-1].id if more and rows else None,
    )
    return out.model_dump(mode="json")


@operation(
    "POST",
    "/salesforce/dead-letters/replay",
    summary="Queue dead letters again (after fixing the cause)",
    body=ReplayRequest,
    response=ReplayOut,
    errors={403: ADMIN_ONLY_ERROR},
)
@admin_required
def salesforce_replay() -> ResponseReturnValue:
    body = parse_body(ReplayRequest)
    replayed = replay_failed(db(), g.team_id, None if body.all else body.ids)
    db().commit()
    return ReplayOut(replayed=replayed).model_dump(mode="json")
