"""Where a team's Salesforce writes stand, and why the ones not written yet wait.

What the Salesforce page and its API show, and what the banner on every page
asks. Every reason is a code and a sentence a person can act on::

    not_connected   no org (no connection of the team's own and no SALESFORCE_*
                    settings), or an admin disconnected it          → connect
    token_revoked   Salesforce refused the stored token (revoked, expired,
                    the connecting user lost access)                 → reconnect
    paused          the org is parked: REQUEST_LIMIT_EXCEEDED (or the default
                    org refused us) — no call at all until then      → wait
    over_budget     the org used the team's share of its daily allowance:
                    opens and clicks wait, sends and replies go      → wait, or raise
    no_contact      no Contact or Lead has the recipient's address   → add one, or
                                                                       create leads
    retrying        a call failed and is being retried with back-off → wait
    errors          dead letters: Salesforce refused the Task        → fix, then Retry

Cost. `banner` is on every signed-in page view: one lookup of the team's
connection row (unique on team_id) and, only while that connection is missing
or broken, one count over `ix_outbox_team_status_due` (team_id, status), kept
in Redis for BANNER_COUNT_SECONDS: 50,000 waiting rows take ~25 ms to count,
too much for every page (`bench/banner_cost.py` prints what it adds).
`org_status` is the page's: a grouped count, a max, and the budget's Redis keys.

This module reads and never calls Salesforce (nor imports its client): the
org's /limits are read by `worker.salesforce.limits.refresh_limits_job`, which
`request_limits_refresh` queues by name.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config import queues
from core.models import (
    OutboxStatus,
    SalesforceAuthKind,
    SalesforceConnection,
    SalesforceConnectionStatus,
    SalesforceOutbox,
)
from core.redis import get_redis
from worker.queueing import enqueue_once
from worker.salesforce.budget import OrgBudget, Parked, Usage
from worker.salesforce.profiles import OrgProfile, profile_of

# Rows that are owed and not yet written (in flight: a flush holds them right now).
WAITING = (OutboxStatus.PENDING, OutboxStatus.WAITING_WHO, OutboxStatus.IN_FLIGHT)
LIMITS_JOB = "worker.salesforce.limits.refresh_limits_job"
# A reading older than this is asked for again when the page is shown.
USAGE_FRESH_SECONDS = 300
# The banner's count is kept this long in Redis: counting a large backlog costs more
# than a page view should pay every time (bench/banner_cost.py).
BANNER_COUNT_SECONDS = 10

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reason:
    code: str
    sentence: str
    count: int | None = None  # the activities it holds, where it holds a known number


@dataclass(frozen=True)
class Banner:
    """Activities held by a missing or broken connection (the banner on every page)."""

    count: int
    code: str  # not_connected | token_revoked
    sentence: str  # "Salesforce is not connected"


@dataclass(frozen=True)
class OrgStatus:
    profile: OrgProfile
    connection: SalesforceConnection | None
    counts: dict[str, int]
    last_write_at: datetime | None
    usage: Usage | None
    parked: Parked | None
    calls_today: int
    reasons: list[Reason] = field(default_factory=list)

    @property
    def waiting(self) -> int:
        return sum(self.counts[status] for status in WAITING)

    @property
    def own_org(self) -> bool:
        """The team connected an org of its own (rather than the operator's default)."""
        row = self.connection
        return row is not None and row.auth_kind != SalesforceAuthKind.DEFAULT

    @property
    def usage_stale(self) -> bool:
        return self.usage is None or time.time() - self.usage.at > USAGE_FRESH_SECONDS


def _connection(session: Session, team_id: int) -> SalesforceConnection | None:
    return session.scalar(
        select(SalesforceConnection).where(SalesforceConnection.team_id == team_id)
    )


def connection_problem(
    profile: OrgProfile, connection: SalesforceConnection | None
) -> Reason | None:
    """Why no write can go at all (not connected, token refused), or None when one can."""
    if profile.ready:
        return None
    if connection is not None and connection.status == SalesforceConnectionStatus.NEEDS_RECONNECT:
        return Reason(
            "token_revoked",
            "Salesforce refused Sightline's access (the connection was revoked or expired)",
        )
    return Reason("not_connected", "Salesforce is not connected")


def banner(session: Session, team_id: int) -> Banner | None:
    """The banner's numbers, or None (nothing waits, or the connection is fine)."""
    connection = _connection(session, team_id)
    problem = connection_problem(profile_of(team_id, connection), connection)
    if problem is None:
        return None
    count = _waiting_count(session, team_id, connection)
    if not count:
        return None
    return Banner(count, problem.code, problem.sentence)


def _waiting_count(session: Session, team_id: int, connection: SalesforceConnection | None) -> int:
    """The team's waiting rows, counted at most every BANNER_COUNT_SECONDS per connection state.

    The key names the connection's state and token_version (moved by every connect,
    disconnect and refused refresh), so a change of connection is never answered
    with the count of the one before.
    """
    state = f"{connection.status}:{connection.token_version}" if connection else "none"
    key = f"sightline:sf:banner:{team_id}:{state}"
    redis: Redis | None = get_redis()
    try:
        cached = redis.get(key) if redis is not None else None
    except RedisError as exc:  # the count still answers; only the cache is lost
        log.warning("salesforce_banner_cache_failed team_id=%s error=%s", team_id, exc)
        cached, redis = None, None
    if cached is not None:
        return int(cached)
    count = int(
        session.scalar(
            select(func.count())
            .select_from(SalesforceOutbox)
            .where(SalesforceOutbox.team_id == team_id, SalesforceOutbox.status.in_(WAITING))
        )
        or 0
    )
    if redis is not None:
        try:
            redis.set(key, count, ex=BANNER_COUNT_SECONDS)
        except RedisError as exc:
            log.warning("salesforce_banner_cache_failed team_id=%s error=%s", team_id, exc)
    return count


def org_status(session: Session, team_id: int) -> OrgStatus:
    """Everything the Salesforce page shows, with the reasons the waiting rows wait."""
    connection = _connection(session, team_id)
    profile = profile_of(team_id, connection)
    counts = dict.fromkeys([s.value for s in OutboxStatus], 0)
    for state, count in session.execute(
        select(SalesforceOutbox.status, func.count())
        .where(SalesforceOutbox.team_id == team_id)
        .group_by(SalesforceOutbox.status)
    ):
        counts[str(state)] = int(count)
    last_write = session.scalar(
        select(func.max(SalesforceOutbox.done_at)).where(
            SalesforceOutbox.team_id == team_id, SalesforceOutbox.status == OutboxStatus.DONE
        )
    )
    if isinstance(last_write, datetime) and last_write.tzinfo is None:
        last_write = last_write.replace(tzinfo=UTC)  # SQLite's aggregate skips the column type
    budget = OrgBudget(profile.org_key)
    status = OrgStatus(
        profile=profile,
        connection=connection,
        counts=counts,
        last_write_at=last_write if isinstance(last_write, datetime) else None,
        usage=budget.usage(),
        parked=budget.parked(),
        calls_today=budget.calls_today(),
    )
    status.reasons.extend(_reasons(session, status))
    return status


def _reasons(session: Session, status: OrgStatus) -> list[Reason]:
    waiting, counts = status.waiting, status.counts
    problem = connection_problem(status.profile, status.connection)
    reasons = []
    if problem is not None:
        action = (
            "an admin connects an org"
            if problem.code == "not_connected"
            else "an admin reconnects it"
        )
        reasons.append(
            Reason(problem.code, f"{problem.sentence}: nothing is written until {action}.", waiting)
        )
    if status.parked is not None:
        until = datetime.fromtimestamp(status.parked.until, UTC)
        why = (
            "the org reached its daily API limit"
            if status.parked.reason == "limit"
            else "Salesforce refused the org's login"
        )
        reasons.append(
            Reason(
                "paused",
                f"Paused until {until:%H:%M} UTC: {why}. Writes start again by themselves.",
                counts[OutboxStatus.PENDING],
            )
        )
    usage, share = status.usage, status.profile.budget_share
    if usage is not None and usage.share * 100 >= share:
        reasons.append(
            Reason(
                "over_budget",
                f"The org has used {usage.share * 100:.0f} % of its daily API allowance, at or "
                f"above this team's share ({share} %): opens and clicks wait; sends and "
                "replies still go.",
            )
        )
    if counts[OutboxStatus.WAITING_WHO]:
        reasons.append(
            Reason(
                "no_contact",
                "No Contact or Lead in Salesforce has the recipient's email address yet "
                "(looked up again every hour; or turn on creating leads).",
                counts[OutboxStatus.WAITING_WHO],
            )
        )
    retrying = session.scalar(
        select(func.count())
        .select_from(SalesforceOutbox)
        .where(
            SalesforceOutbox.team_id == status.profile.team_id,
            SalesforceOutbox.status == OutboxStatus.PENDING,
            SalesforceOutbox.last_error.is_not(None),
        )
    )
    if retrying:
        reasons.append(
            Reason(
                "retrying",
                "A call to Salesforce failed; these are tried again with a growing pause.",
                int(retrying),
            )
        )
    if counts[OutboxStatus.FAILED]:
        reasons.append(
            Reason(
                "errors",
                "Salesforce refused these Tasks (see the error of each below): fix the cause "
                "in Salesforce, then Retry.",
                counts[OutboxStatus.FAILED],
            )
        )
    return reasons


def request_limits_refresh(team_id: int) -> bool:
    """Ask a worker to read the org's /limits (at most one waiting per team). True if queued."""
    return enqueue_once(
        f"sf-limits:{team_id}", queues.SALESFORCE, LIMITS_JOB, team_id, retry=None, ttl=120
    )
