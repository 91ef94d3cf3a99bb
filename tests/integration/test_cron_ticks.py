"""The `cron` process queues a tick only when its previous copy no longer waits.

With RQ's own scheduler a tick that fell due every interval while the default
queue was behind left one copy per interval in the queue. Here the tick is slow
(a real RQ worker runs it and it holds until told to finish) and falls due six
times meanwhile: one copy runs, one waits, and no more are queued.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from rq import Queue
from rq.job import Job
from rq.utils import now

from config import Settings
from core.redis import get_redis
from worker.cron import TickScheduler
from worker.queueing import get_queue

pytestmark = pytest.mark.integration

QUEUE = "cron-test"
RELEASE_KEY = "test:cron:release"
RUNS_KEY = "test:cron:runs"
STARTED_KEY = "test:cron:started"


def slow_tick() -> None:
    """A tick that takes as long as the test wants: it counts itself, then waits to be let go."""
    get_redis().incr(RUNS_KEY)
    get_redis().rpush(STARTED_KEY, "started")
    get_redis().blpop([RELEASE_KEY], timeout=30)


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url  # Redis is what this is about


def _fall_due(ticks: TickScheduler) -> None:
    for job in ticks.get_jobs():
        job.next_enqueue_time = now() - timedelta(seconds=1)


def test_a_slow_tick_never_piles_up_copies_behind_it(env: Settings) -> None:
    redis = get_redis()
    ticks = TickScheduler(connection=redis)
    ticks.register(slow_tick, QUEUE, interval=5, result_ttl=0, job_timeout=60)
    queue = get_queue(QUEUE)
    queue.empty()

    assert len(ticks.enqueue_jobs()) == 1  # the first copy
    running = _work_one(queue)
    assert redis.blpop([STARTED_KEY], timeout=30) is not None  # the first copy is running

    enqueued = 0
    for _ in range(6):  # six intervals pass while it runs
        _fall_due(ticks)
        enqueued += len(ticks.enqueue_jobs())
    assert enqueued == 1  # one copy queued behind the running one, not six
    assert len(queue) == 1

    redis.rpush(RELEASE_KEY, "go", "go")  # let the running copy and the queued one finish
    running.join(timeout=30)
    _work_one(queue).join(timeout=30)
    assert int(redis.get(RUNS_KEY) or 0) == 2 and len(queue) == 0

    _fall_due(ticks)
    assert len(ticks.enqueue_jobs()) == 1  # nothing waits any more: the next tick is queued


def _work_one(queue: Queue) -> threading.Thread:
    """What a worker does with the next job: take it off the queue, run it (in a thread)."""
    raw = get_redis().lpop(queue.key)
    assert raw is not None
    job = Job.fetch(raw.decode() if isinstance(raw, bytes) else str(raw), connection=get_redis())
    thread = threading.Thread(target=job.perform, daemon=True)
    thread.start()
    return thread
