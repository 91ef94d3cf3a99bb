"""A job a worker took while a Redis restart cut off the answer is run, not failed.

RQ takes a job with BLMOVE into `<queue>:intermediate`; a worker whose BLMOVE
answer was lost asks again and takes the next job, and RQ's maintenance later
fails the first ("stuck in intermediate queue"). Here the lost answer is what
it leaves in Redis: the job moved into the intermediate list by an LMOVE no
worker heard. Real Redis, a real RQ worker.
"""

from __future__ import annotations

import time

from rq import SimpleWorker
from rq.job import JobStatus
from rq.queue import Queue

from config import Settings, queues
from core.redis import get_redis
from worker.stranded_jobs import requeue_stranded_jobs

STRANDED = 0.2  # seconds between sightings, instead of STRANDED_SECONDS


def test_a_job_stranded_by_a_lost_answer_is_put_back_and_runs(env: Settings) -> None:
    redis = get_redis()
    queue = Queue(queues.DEFAULT, connection=redis)
    stranded = queue.enqueue("os.getpid")
    waiting = queue.enqueue("os.getcwd")
    # What a BLMOVE whose answer was lost leaves behind: the job moved, no worker on it.
    assert redis.lmove(queue.key, queue.intermediate_queue.key) == stranded.id.encode()

    assert requeue_stranded_jobs(STRANDED) == 0  # first sighting: it may be starting
    assert queue.intermediate_queue.get_job_ids() == [stranded.id]
    time.sleep(STRANDED + 0.1)
    assert requeue_stranded_jobs(STRANDED) == 1
    assert queue.intermediate_queue.get_job_ids() == []
    assert queue.job_ids == [stranded.id, waiting.id]  # at the front, where it was

    SimpleWorker([queue], connection=redis).work(burst=True)
    stranded.refresh()
    assert stranded.get_status() == JobStatus.FINISHED
    assert requeue_stranded_jobs(STRANDED) == 0
