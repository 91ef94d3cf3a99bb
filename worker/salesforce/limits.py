"""Reading an org's daily API allowance from its /limits: the job the Salesforce page asks for.

The budget (`budget.py`) learns the org's usage from the `Sforce-Limit-Info`
header of every response, but only while Sightline calls the org: a quiet
team, or one whose engagement is deferred, would see a reading hours old. The
page therefore queues this job (`org_status.request_limits_refresh`, by name:
the web process never calls Salesforce) when its reading is older than five
minutes, or when an admin presses "Refresh". One `GET limits/` costs one API
call; its body's `DailyApiRequests` (Max, Remaining) is recorded as the
budget's reading, the same numbers the header carries.

A team that cannot write now (not connected, token refused, parked) is not
asked: the job would fail for the reason the page already shows.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.queueing import job_started
from worker.salesforce.budget import OrgBudget
from worker.salesforce.connections import open_api
from worker.salesforce.profiles import load_profile

log = logging.getLogger(__name__)


def read_daily_requests(limits: Any) -> tuple[int, int] | None:
    """(used, max) from a /limits answer's DailyApiRequests, if it has them."""
    daily = limits.get("DailyApiRequests") if isinstance(limits, dict) else None
    if not isinstance(daily, dict):
        return None
    maximum, remaining = daily.get("Max"), daily.get("Remaining")
    if not isinstance(maximum, int) or not isinstance(remaining, int):
        return None
    return max(maximum - remaining, 0), maximum


def refresh_limits_job(team_id: int) -> dict[str, object]:
    """Read the team's org's /limits into its budget. Safe to run twice."""
    job_started(f"sf-limits:{team_id}")
    profile = load_profile(team_id)
    budget = OrgBudget(profile.org_key)
    if not profile.ready or budget.parked() is not None:
        return {"team_id": team_id, "read": False}
    usage = read_daily_requests(open_api(profile, budget).call("GET", "limits/"))
    if usage is not None:
        budget.record(*usage)
    log.info(
        "salesforce_limits_read team_id=%s org=%s used=%s max=%s",
        team_id,
        profile.org_key,
        *(usage or ("-", "-")),
    )
    return {"team_id": team_id, "read": usage is not None}
