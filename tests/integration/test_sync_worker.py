"""The `sync` process's worker: fewer heartbeats, never a worker key that expires early.

`SyncWorker` drops a plain heartbeat that repeats one sent moments ago (rq sends
three between two jobs). What must still hold: the worker's key lives
`worker_ttl + 60` seconds after a job, as rq would have it, and the jobs run.
"""

from __future__ import annotations

import pytest

from config import Settings
from core.redis import get_redis
from worker.queueing import enqueue_once, get_queue
from worker.sync.sync_worker import SyncWorker

pytestmark = pytest.mark.integration

JOB = "worker.queueing.job_started"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url  # Redis is what this is about


def _heartbeat_field(worker: SyncWorker) -> bytes | None:
    value = get_redis().hget(worker.key, "last_heartbeat")
    return value if isinstance(value, bytes) else None


def test_a_repeated_plain_heartbeat_is_not_sent(env: Settings) -> None:
    worker = SyncWorker([get_queue("default")], connection=get_redis())
    worker.register_birth()
    worker.heartbeat()
    sent = _heartbeat_field(worker)
    get_redis().hset(worker.key, "last_heartbeat", "marker")
    worker.heartbeat()
    assert _heartbeat_field(worker) == b"marker"  # the repeat went nowhere
    assert sent is not None


def test_after_a_job_starts_the_key_gets_its_full_life_again(env: Settings) -> None:
    redis = get_redis()
    worker = SyncWorker([get_queue("default")], connection=redis)
    worker.register_birth()
    worker.heartbeat()
    # A job starting: rq's own, shorter timeout, in a pipeline (prepare_job_execution).
    with redis.pipeline() as pipeline:
        worker.heartbeat(90, pipeline=pipeline)
        pipeline.execute()
    assert 0 < redis.ttl(worker.key) <= 90
    worker.heartbeat()  # the job is done: a plain heartbeat must go out
    assert redis.ttl(worker.key) > 90
    assert redis.ttl(worker.key) <= worker.worker_ttl + 60


def test_jobs_run_and_the_worker_key_outlives_them(env: Settings) -> None:
    redis = get_redis()
    for n in range(3):
        assert enqueue_once(f"w:{n}", "default", JOB, f"w:{n}")
    worker = SyncWorker([get_queue("default")], connection=redis)
    seen: list[int] = []
    original = worker.perform_job

    def perform_job(*args: object, **kwargs: object) -> bool:
        result = original(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(int(redis.ttl(worker.key)))
        return result

    worker.perform_job = perform_job  # type: ignore[method-assign]
    worker.work(burst=True)
    assert get_queue("default").count == 0
    # The key was alive after every job (a job's start sets 90 s; never expired).
    assert len(seen) == 3 and all(ttl > 0 for ttl in seen)
    assert not any(redis.exists(f"sightline:queued:w:{n}") for n in range(3))
