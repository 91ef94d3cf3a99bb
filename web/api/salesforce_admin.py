"""API v1: what the Salesforce page shows and asks beyond web.api.salesforce (admins only).

    GET  /salesforce/status           the connection, activities waiting and why (each
                                      reason a code, a sentence and the count it holds),
                                      the last successful write, the org's API use
    POST /salesforce/usage/refresh    ask a worker to read the org's /limits now

The numbers are `worker.salesforce.org_status`'s, the same the page and the
banner read; nothing here calls Salesforce (the refresh queues a job).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from web.api.common import ApiError
from web.api.operations import operation
from web.db import db
from web.roles import admin_required
from worker.salesforce.org_status import org_status, request_limits_refresh

ADMIN_ONLY = "The token's user is a member, not an admin (`admin_only`, naming the admins)"

ReasonCode = Literal[
    "not_connected", "token_revoked", "paused", "over_budget", "no_contact", "retrying", "errors"
]


class WaitReasonOut(BaseModel):
    code: ReasonCode
    sentence: str
    count: int | None = Field(description="Activities this holds, where it holds a known number")


class OrgUsageOut(BaseModel):
    used: int
    max: int
    share_percent: float
    as_of: datetime
    calls_today: int = Field(description="API calls Sightline made to this org today (UTC)")


class SalesforceStatusOut(BaseModel):
    ready: bool = Field(description="Writes can go now (connected, token accepted)")
    own_org: bool = Field(description="The team connected an org of its own")
    org_id: str | None
    instance_url: str | None
    username: str | None = Field(description="The Salesforce user who connected it")
    connected_at: datetime | None
    last_write_at: datetime | None = Field(description="The last Task written")
    waiting: int = Field(description="Activities owed and not written yet")
    failed: int = Field(description="Dead letters: GET /salesforce/dead-letters")
    reasons: list[WaitReasonOut]
    usage: OrgUsageOut | None = Field(
        description="The org's rolling 24-hour API use, as Salesforce last said; null until read"
    )
    budget_share: int
    create_leads: bool


class RefreshOut(BaseModel):
    queued: bool = Field(description="false: a read was already waiting")


@operation(
    "GET",
    "/salesforce/status",
    summary="The team's Salesforce status, and why activities wait",
    response=SalesforceStatusOut,
    errors={403: ADMIN_ONLY},
)
@admin_required
def salesforce_status() -> ResponseReturnValue:
    status = org_status(db(), g.team_id)
    row = status.connection if status.own_org else None
    usage = status.usage
    out = SalesforceStatusOut(
        ready=status.profile.ready,
        own_org=status.own_org,
        org_id=row.org_id if row else None,
        instance_url=row.instance_url if row else None,
        username=row.username if row else None,
        connected_at=row.connected_at if row else None,
        last_write_at=status.last_write_at,
        waiting=status.waiting,
        failed=status.counts["failed"],
        reasons=[
            WaitReasonOut(code=r.code, sentence=r.sentence, count=r.count) for r in status.reasons
        ],
        usage=OrgUsageOut(
            used=usage.used,
            max=usage.max,
            share_percent=round(usage.share * 100, 2),
            as_of=datetime.fromtimestamp(usage.at, UTC),
            calls_today=status.calls_today,
        )
        if usage is not None
        else None,
        budget_share=status.profile.budget_share,
        create_leads=status.profile.create_leads,
    )
    return out.model_dump(mode="json")


@operation(
    "POST",
    "/salesforce/usage/refresh",
    summary="Ask a worker to read the org's API use (/limits) now",
    response=RefreshOut,
    errors={403: ADMIN_ONLY, 409: "No working org to read (`not_connected`)"},
)
@admin_required
def salesforce_usage_refresh() -> ResponseReturnValue:
    status = org_status(db(), g.team_id)
    if not status.profile.ready:
        raise ApiError(409, "not_connected", "connect Salesforce first: no working org to read")
    return RefreshOut(queued=request_limits_refresh(g.team_id)).model_dump(mode="json")
