"""Draining the Salesforce outbox: every activity exactly once, in as few calls as it takes.

Rows are Tasks we owe (`task_sent`, `task_reply`: one Task each) and
engagement updates (`task_engagement`: the counters of a sent email's Task,
see `engagement`). This module is the flush: the cron job that picks the teams
with a batch due, and per team a lock, the budget checks and the rounds. The
parts it drives:

- `outbox_rows`: which rows are due, claiming them, settling each by its own
  result (the row state machine is drawn there);
- `task_records`: the Task records, their keys, and finding the ones already
  written (exactly once rests there);
- `composite_writes`: one round of up to 1,000 rows in two or three calls;
- `bulk`: a backlog through Bulk API 2.0;
- `outbox_replay`: dead letters, replayed by a person.

Budget: above the team's share of the org's daily allowance, engagement rows
are not claimed; sends and replies keep flowing. A 403 REQUEST_LIMIT_EXCEEDED
parks the org (no call at all) for SIGHTLINE_SALESFORCE_PARK_SECONDS. A backlog
above SIGHTLINE_SALESFORCE_BULK_THRESHOLD Tasks goes through Bulk API 2.0
(`bulk`) first.

RQ stores the job path `worker.salesforce.outbox.flush_team_job` with each
queued flush: it must stay importable here across upgrades.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from redis.exceptions import LockError
from sqlalchemy import func, select

from config import get_settings, queues
from core.db import session_scope
from core.models import SalesforceOutbox, utcnow
from core.redis import get_redis
from worker.queueing import enqueue_once, job_started
from worker.salesforce import bulk
from worker.salesforce.budget import OrgBudget
from worker.salesforce.client import SalesforceApi, SalesforceError
from worker.salesforce.composite_writes import write_rows
from worker.salesforce.connections import open_api
from worker.salesforce.outbox_rows import (
    CLAIM_BATCH,
    TASK_KINDS,
    FlushStats,
    claim,
    due_task_count,
    is_due,
    outage_over,
    release,
)
from worker.salesforce.profiles import OrgProfile, load_profile

log = logging.getLogger(__name__)

MAX_ROUNDS = 10  # rounds per flush job: a busy team yields to others, then continues
USAGE_STALE_SECONDS = 600  # an "over the share" older than this is checked again


# -- the flush ------------------------------------------------------------------------


def flush_team(team_id: int) -> FlushStats:
    """Write the team's due outbox rows to Salesforce. Safe to run concurrently."""
    stats = FlushStats()
    profile = load_profile(team_id)
    if not profile.ready:
        return stats  # rows are held until the org is reachable
    budget = OrgBudget(profile.org_key)
    if budget.parked() is not None:
        return stats
    redis = get_redis()
    lock = redis.lock(
        f"sightline:sf:flush:{team_id}", timeout=get_settings().salesforce_lease_seconds
    )
    if not lock.acquire(blocking=False):
        return stats  # another flusher of this team is at work
    api = open_api(profile, budget)
    try:
        _flush_rounds(api, profile, budget, stats)
    finally:
        stats.calls = api.calls
        try:
            lock.release()
        except LockError:  # the lease ran out during a long round; rows are guarded by claim
            log.warning("salesforce_flush_lock_lost team_id=%s", team_id)
    log.info(
        "salesforce_flush team_id=%s org=%s claimed=%s done=%s waiting_who=%s retried=%s "
        "failed=%s deferred=%s leads_created=%s bulk_rows=%s calls=%s",
        team_id,
        profile.org_key,
        stats.claimed,
        stats.done,
        stats.waiting_who,
        stats.retried,
        stats.failed,
        stats.deferred,
        stats.leads_created,
        stats.bulk_rows,
        stats.calls,
    )
    return stats


def _flush_rounds(
    api: SalesforceApi, profile: OrgProfile, budget: OrgBudget, stats: FlushStats
) -> None:
    settings = get_settings().salesforce
    bulk_first = due_task_count(profile.team_id, utcnow()) > settings.bulk_threshold
    for _ in range(MAX_ROUNDS):
        try:
            deferred = _engagement_deferred(api, profile, budget)
        except SalesforceError as exc:
            stats.errors.append(str(exc))
            return
        if deferred and not stats.deferred:
            usage = budget.usage()
            log.info(
                "salesforce_engagement_deferred team_id=%s org=%s used=%s max=%s share=%s",
                profile.team_id,
                profile.org_key,
                usage.used if usage else None,
                usage.max if usage else None,
                profile.budget_share,
            )
        stats.deferred = stats.deferred or deferred
        try:
            if bulk_first:
                bulk_first = False
                if bulk.backfill(api, profile, stats):
                    continue
            with session_scope() as session:
                rows = claim(
                    session, profile.team_id, utcnow(), kinds=TASK_KINDS if deferred else None
                )
            if not rows:
                return
            stats.claimed += len(rows)
            try:
                write_rows(api, profile, rows, stats)
            except SalesforceError as exc:
                release(rows, exc, stats)
                raise
            outage_over(profile.team_id)
        except SalesforceError as exc:
            # A team's own org that refused us is marked needs_reconnect (not ready)
            # by `auth`; the shared default org has no such flag, so it is parked.
            if exc.kind == "limit" or (exc.kind == "auth" and profile.connection_id is None):
                seconds = settings.park_seconds
                budget.park(seconds, exc.kind)
                log.warning(
                    "salesforce_parked team_id=%s org=%s reason=%s seconds=%s",
                    profile.team_id,
                    profile.org_key,
                    exc.kind,
                    seconds,
                )
            return


def _engagement_deferred(api: SalesforceApi, profile: OrgProfile, budget: OrgBudget) -> bool:
    """Is the org above the team's share? A stale "yes" is checked with one cheap call,
    since only our own calls refresh it and deferred work makes none."""
    if not budget.over_share(profile.budget_share):
        return False
    usage = budget.usage()
    if usage is not None and time.time() - usage.at > USAGE_STALE_SECONDS:
        api.call("GET", "limits/")  # its Sforce-Limit-Info refreshes the budget
        return budget.over_share(profile.budget_share)
    return True


# -- jobs -----------------------------------------------------------------------------


def teams_to_flush(now: datetime) -> list[int]:
    """Teams with a full batch due, or whose oldest due row has waited the batch window.

    Writing every cron tick would spend a call pair on a handful of rows; waiting
    up to SIGHTLINE_SALESFORCE_BATCH_SECONDS fills the calls instead.
    """
    window = timedelta(seconds=get_settings().salesforce.batch_seconds)
    with session_scope() as session:
        due = session.execute(
            select(
                SalesforceOutbox.team_id,
                func.count(),
                func.min(SalesforceOutbox.next_attempt_at),
            )
            .where(is_due(now))
            .group_by(SalesforceOutbox.team_id)
        ).all()
    ready = []
    for team_id, count, oldest in due:
        oldest_at = oldest if isinstance(oldest, datetime) else None
        if oldest_at is not None and oldest_at.tzinfo is None:
            oldest_at = oldest_at.replace(tzinfo=UTC)  # SQLite's aggregate skips the column type
        if count >= CLAIM_BATCH or oldest_at is None or oldest_at <= now - window:
            ready.append(int(team_id))
    return ready


def flush_all() -> int:
    """Cron: queue one flush per team that is ready (see `teams_to_flush`)."""
    team_ids = teams_to_flush(utcnow())
    return sum(
        enqueue_once(
            f"sf-flush:{team_id}",
            queues.SALESFORCE,
            "worker.salesforce.outbox.flush_team_job",
            int(team_id),
            # Short: a job lost between dequeue and `job_started` (its worker killed
            # while forking) holds this marker until it expires. A duplicate flush
            # job is harmless: the team's lock turns it away.
            ttl=max(10, 2 * get_settings().salesforce_flush_seconds),
            retry=None,
        )
        for team_id in team_ids
    )


def flush_team_job(team_id: int) -> dict[str, object]:
    job_started(f"sf-flush:{team_id}")
    stats = flush_team(team_id)
    return {
        "claimed": stats.claimed,
        "done": stats.done,
        "failed": stats.failed,
        "calls": stats.calls,
    }


# -- dead letters -----------------------------------------------------------------------
