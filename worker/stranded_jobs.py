"""Jobs a worker took without hearing it had: back at the front of their queue, not failed.

RQ 3 takes a job with BLMOVE from its queue into `<queue>:intermediate`, then
registers it as started and takes it out of that list, within milliseconds. If
a Redis restart cuts off BLMOVE's answer, the worker (`core.redis.ResilientRedis`,
or RQ's own loop) asks again and takes the next job: the first stays in the
intermediate list, run by no one. RQ's maintenance (every 10 minutes) then
*fails* it ("Job was stuck in intermediate queue"), and a failed job runs again
only if a person requeues it (`worker.failed_jobs`): a send, a Salesforce write
or an event would wait for a person, or be lost.

This cron tick puts such a job back at the front of its queue instead: one in
no started registry, seen in the intermediate list twice at least
STRANDED_SECONDS apart. A job really taken is registered long before that; one
put back twice by a race would run twice, which every job here allows (they are
claimed, keyed or idempotent), where a lost one would not run at all.

Cost per tick: an LRANGE per queue (the list is empty but for such jobs).
"""

from __future__ import annotations

import logging
import time

from rq.queue import Queue

from config import queues
from core.redis import get_redis

log = logging.getLogger(__name__)

STRANDED_SECONDS = 30.0
SEEN_KEY = "sightline:intermediate:seen:{job_id}"
# A sighting is forgotten soon after: the tick comes every 15 s, and a job id that
# passes through the list again later must not be judged by an old sighting.
SEEN_TTL_SECONDS = 4 * STRANDED_SECONDS

# Out of the intermediate list and back at the queue's front, or nothing if a worker
# took it out meanwhile (it started after all).
_PUT_BACK = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def requeue_stranded_jobs(stranded_seconds: float = STRANDED_SECONDS) -> int:
    """Cron: put back every job stranded in an intermediate list. Returns how many."""
    redis = get_redis()
    put_back = 0
    forget_after = int(max(SEEN_TTL_SECONDS, 4 * stranded_seconds))
    for name in queues.ALL:
        queue = Queue(name, connection=redis)
        intermediate = queue.intermediate_queue
        for job_id in intermediate.get_job_ids():
            if job_id in queue.started_job_registry:
                continue
            seen = SEEN_KEY.format(job_id=job_id)
            now = time.time()
            if redis.set(seen, f"{now:.3f}", nx=True, ex=forget_after):
                continue  # first sighting: a worker may be registering it right now
            first = float(redis.get(seen) or now)
            if now - first < stranded_seconds:
                continue
            if redis.eval(_PUT_BACK, 2, intermediate.key, queue.key, job_id):
                put_back += 1
                log.warning("job_put_back queue=%s job_id=%s", name, job_id)
            redis.delete(seen)
    return put_back
