"""Enqueueing RQ jobs. Jobs take ids, not objects, and are safe to run twice.

Job functions are referenced by dotted path so that web processes enqueue work
without importing worker code (and its vendor SDKs).

`enqueue_once` keeps at most one *waiting* job per key (a mailbox, a team, a
step). It uses a marker set with NX rather than RQ's unique job ids on purpose:
a unique id stays taken while a killed worker's job sits in RQ's started
registry (until maintenance notices, minutes later), which would stall that
mailbox or team. The marker is dropped by the job as it starts (`job_started`),
so a job killed mid-way never blocks the next one; it also expires on its own.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from rq import Queue, Retry

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
) -> None:
    """Enqueue `func(*args)`; a finished job is deleted at once (`result_ttl=0`)."""
    q = get_queue(queue)
    options: dict[str, Any] = {
        "retry": retry,
        "job_timeout": timeout,
        "result_ttl": result_ttl,
        "failure_ttl": failure_ttl,
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
    if not get_redis().set(_marker(key), 1, nx=True, ex=ttl):
        return False
    try:
        enqueue(queue, func, *args, **options)
    except BaseException:
        get_redis().delete(_marker(key))
        raise
    return True


def job_started(key: str) -> None:
    """Let the next `enqueue_once(key)` through: this job has begun its work."""
    get_redis().delete(_marker(key))
