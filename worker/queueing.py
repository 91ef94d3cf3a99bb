"""Enqueueing RQ jobs by id. Jobs take ids, not objects, and are safe to run twice.

Job functions are referenced by dotted path so that web processes enqueue work
without importing worker code (and its vendor SDKs).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

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
    job_id: str | None = None,
    unique: bool = False,
    delay: timedelta | None = None,
    retry: Retry | None = DEFAULT_RETRY,
    timeout: int = 600,
    result_ttl: int = 0,
    failure_ttl: int = 7 * 24 * 3600,
) -> bool:
    """Enqueue `func(*args)`. Returns False when `unique` and the id is taken.

    `result_ttl=0` deletes a finished job at once, which also frees its id for
    the next unique enqueue.
    """
    q = get_queue(queue)
    options: dict[str, Any] = {
        "job_id": job_id,
        "retry": retry,
        "job_timeout": timeout,
        "result_ttl": result_ttl,
        "failure_ttl": failure_ttl,
    }
    try:
        if delay is not None:
            q.enqueue_in(delay, func, *args, **options)
        else:
            q.enqueue(func, *args, unique=unique, **options)
    except DuplicateJobError:
        return False
    return True
