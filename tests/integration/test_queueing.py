"""`enqueue_once`: one waiting job per key, and a job lost by a killed worker is queued again.

Found by the chaos run (`make chaos`): a worker SIGKILLed after RQ took a job
from its queue but before the job started lost the job and left its "queued"
marker, so that step (or that mailbox's sync) waited out the marker's two
minutes. The marker now names its job; a marked job that is neither queued nor
scheduled was lost, and the next `enqueue_once` takes over.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from rq.job import Job

from config import Settings
from core.redis import get_redis
from worker.queueing import enqueue_once, get_queue

pytestmark = pytest.mark.integration

JOB = "worker.queueing.job_started"  # a job that does nothing but start: job_started(key)


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url  # Redis is what this is about


def _queued(queue: str = "default") -> list[str]:
    return list(get_queue(queue).job_ids)


def _lose_next_job(queue: str = "default") -> str:
    """What a worker does before it is killed: take the job off the queue (BLPOP)."""
    raw = get_redis().lpop(get_queue(queue).key)
    assert raw is not None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def test_a_waiting_job_refuses_a_second(env: Settings) -> None:
    assert enqueue_once("k:1", "default", JOB, "k:1")
    assert not enqueue_once("k:1", "default", JOB, "k:1")
    assert len(_queued()) == 1


def test_a_scheduled_job_refuses_a_second(env: Settings) -> None:
    assert enqueue_once("k:2", "default", JOB, "k:2", delay=timedelta(minutes=5))
    assert not enqueue_once("k:2", "default", JOB, "k:2")
    assert _queued() == []


def test_a_job_lost_before_it_started_is_queued_again_at_once(env: Settings) -> None:
    assert enqueue_once("k:3", "default", JOB, "k:3")
    lost = _lose_next_job()
    assert enqueue_once("k:3", "default", JOB, "k:3")  # not two minutes later
    assert len(_queued()) == 1 and _queued() != [lost]
    assert not enqueue_once("k:3", "default", JOB, "k:3")  # and the new one is guarded


def test_a_job_thought_lost_that_runs_after_all_leaves_the_new_marker(env: Settings) -> None:
    assert enqueue_once("k:4", "default", JOB, "k:4")
    slow = _lose_next_job()  # taken by a worker that is merely slow to start it
    assert enqueue_once("k:4", "default", JOB, "k:4")
    Job.fetch(slow, connection=get_redis()).perform()  # job_started("k:4") as the old job
    assert not enqueue_once("k:4", "default", JOB, "k:4")  # the new job still guards the key
    newer = Job.fetch(_queued()[0], connection=get_redis())
    newer.perform()
    assert enqueue_once("k:4", "default", JOB, "k:4")


def test_a_job_that_started_lets_the_next_through(env: Settings) -> None:
    assert enqueue_once("k:5", "default", JOB, "k:5")
    Job.fetch(_lose_next_job(), connection=get_redis()).perform()
    assert enqueue_once("k:5", "default", JOB, "k:5")


def test_a_marker_from_before_ids_still_guards_until_it_expires(env: Settings) -> None:
    get_redis().set("sightline:queued:k:6", 1, ex=60)
    assert not enqueue_once("k:6", "default", JOB, "k:6")
