"""Enqueueing RQ jobs. Jobs take ids, not objects, and are safe to run twice.

Job functions are referenced by dotted path so that web processes enqueue work
without importing worker code (and its vendor SDKs).

`enqueue_once` keeps at most one *waiting* job per key (a mailbox, a team, a
step). It uses a marker set with NX rather than RQ's unique job ids on purpose:
a unique id stays taken while a killed worker's job sits in RQ's started
registry (until maintenance notices, minutes later), which would stall that
mailbox or team. The marker is dropped by the job as it starts (`job_started`),
so a job killed mid-way never blocks the next one; it also expires on its own.

The marker holds the job's id. A worker killed after taking the job from its
queue but before the job started (RQ's BLPOP, then a fork) loses the job and
leaves the marker; the next `enqueue_once` finds the marked job neither in its
queue nor scheduled, takes the marker over and enqueues (logged as
`queued_marker_taken_over`). Without that, the chaos run's SIGKILLs held a step
or a mailbox's sync back for the marker's whole TTL (two minutes). A job in that
window that was *not* lost (merely starting) then runs alongside the new one,
which every job must tolerate anyway.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from redis import Redis
from redis.exceptions import WatchError
from rq import Queue, Retry, get_current_job

from core.redis import get_redis

log = logging.getLogger(__name__)

# Transient failures (a provider timing out, Salesforce busy) back off then retry.
DEFAULT_RETRY = Retry(max=5, interval=[5, 30, 120, 600, 1800])


def get_queue(name: str) -> Queue:
    return Queue(name, connection=get_redis())


def enqueue(
    queue: str,
    func: str,
    *args: Any,
    delay: timedelta | None = None,
    retry: Retry | None = DEFAULT_RETRY,
    timeout: int = 600,
    result_ttl: int = 0,
    failure_ttl: int = 7 * 24 * 3600,
    job_id: str | None = None,
) -> None:
    """Enqueue `func(*args)`; a finished job is deleted at once (`result_ttl=0`)."""
    q = get_queue(queue)
    options: dict[str, Any] = {
        "retry": retry,
        "job_timeout": timeout,
        "result_ttl": result_ttl,
        "failure_ttl": failure_ttl,
        "job_id": job_id,
    }
    if delay is not None:
        q.enqueue_in(delay, func, *args, **options)
    else:
        q.enqueue(func, *args, **options)


def _marker(key: str) -> str:
    return f"sightline:queued:{key}"


def enqueue_once(
    key: str, queue: str, func: str, *args: Any, ttl: int = 600, **options: Any
) -> bool:
    """Enqueue unless a job for `key` is already waiting. True if enqueued.

    The job must call `job_started(key)` before doing its work.
    """
    redis = get_redis()
    marker = _marker(key)
    job_id = uuid.uuid4().hex
    if not redis.set(marker, job_id, nx=True, ex=ttl) and not _take_over_lost(
        redis, marker, queue, job_id, ttl
    ):
        return False
    try:
        enqueue(queue, func, *args, job_id=job_id, **options)
    except BaseException:
        _drop_marker(redis, marker, job_id)
        raise
    return True


def _waiting(redis: Redis, queue: str, job_id: str) -> bool:
    """True while the job sits in its queue or is scheduled for later (delay, retry)."""
    q = get_queue(queue)
    return (
        redis.lpos(q.key, job_id) is not None
        or redis.zscore(q.scheduled_job_registry.key, job_id) is not None
    )


def _take_over_lost(redis: Redis, marker: str, queue: str, job_id: str, ttl: int) -> bool:
    """Point the marker at `job_id` if its job was lost before it started. True if taken."""
    with redis.pipeline() as pipe:
        try:
            pipe.watch(marker)  # type: ignore[no-untyped-call]
            raw = pipe.get(marker)
            if raw is None:  # dropped meanwhile: an ordinary NX set decides
                pipe.multi()
                pipe.set(marker, job_id, nx=True, ex=ttl)
                return bool(pipe.execute()[0])
            marked = raw.decode() if isinstance(raw, bytes) else str(raw)
            if marked == "1" or _waiting(redis, queue, marked):
                return False  # "1": a marker from before ids were stored; it expires
            pipe.multi()
            pipe.set(marker, job_id, ex=ttl)
            pipe.execute()
        except WatchError:
            return False  # another process got there first, and enqueued
    # Not a warning: most often the job is merely starting (taken from its queue, the
    # work horse not yet forked) and runs alongside the new one, which jobs tolerate.
    log.info(
        "queued_marker_taken_over marker=%s previous_job_id=%s queue=%s", marker, marked, queue
    )
    return True


# Delete the marker only if it still names this job (a newer one may have taken it
# over), or is a "1" from before markers held ids.
_DROP_IF_MINE = """
local marked = redis.call('GET', KEYS[1])
if marked == ARGV[1] or marked == '1' then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _drop_marker(redis: Redis, marker: str, job_id: str) -> None:
    redis.eval(_DROP_IF_MINE, 1, marker, job_id)


def job_started(key: str) -> None:
    """Let the next `enqueue_once(key)` through: this job has begun its work."""
    job = get_current_job()
    if job is None:  # called outside RQ (tests, a command): nothing to compare with
        get_redis().delete(_marker(key))
    else:
        _drop_marker(get_redis(), _marker(key), job.id)
