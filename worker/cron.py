"""The cron table and the `cron` process (`python -m worker.cron`): one waiting copy per tick.

Each entry is a cheap "tick" that finds due work and enqueues jobs with fixed
ids, so two cron processes (or a restart) never double the work itself.

RQ's own `rq cron` enqueues a tick every interval whatever became of the last
one. When the default queue is behind (a burst of sends, a worker down for ten
minutes), the copies pile up behind it, a hundred and twenty of the 5-second
poll in ten minutes, and each runs in turn once the workers catch up, though
one would have found all the due work. `TickScheduler` skips a tick while its
previous copy still waits in the queue (not yet taken by a worker)::

    tick due ─▶ newest job of this tick (RQ's cron history) still in the queue?
                   yes: skip (logged `cron_tick_skipped`), due again an interval later
                   no (taken, done, or lost with a killed worker): enqueue

So at most one copy waits and one runs. One Redis LPOS per due tick.
"""

from __future__ import annotations

import logging

from rq.cron import CronJob, CronScheduler
from rq.queue import Queue
from rq.utils import now

from config import get_settings, queues
from config.logging import configure_logging
from core.redis import get_redis
from worker.documents.jobs import recover_documents
from worker.salesforce.outbox import flush_all
from worker.sequences.jobs import enqueue_due_steps, recover_stuck_sends, resume_paused
from worker.sequences.oneoff import enqueue_due_one_offs
from worker.stranded_jobs import requeue_stranded_jobs
from worker.sync.drain import drain_tick
from worker.sync.polling import poll_mailboxes
from worker.sync.push import renew_due as renew_push

log = logging.getLogger(__name__)

settings = get_settings()

# (tick, seconds between ticks). Every tick runs on the default queue, is done
# within 5 minutes and keeps no result.
TICKS = [
    (enqueue_due_steps, settings.sequence_tick_seconds),
    # One-off emails scheduled for later go out on the same tick as sequence steps.
    (enqueue_due_one_offs, settings.sequence_tick_seconds),
    # Resuming a paused enrolment is due sequence work: it runs on the sequence tick.
    (resume_paused, settings.sequence_tick_seconds),
    (poll_mailboxes, max(5, settings.sync_poll_seconds // 4)),
    (flush_all, settings.salesforce_flush_seconds),
    (recover_stuck_sends, 60),
    # Gmail watches and Graph subscriptions renewed a day before they lapse (worker/sync/push.py).
    (renew_push, 900),
    # Documents whose job was lost (Redis failover, a killed worker) are queued again.
    (recover_documents, 60),
    # Jobs a worker took while a Redis restart cut off the answer: put back, not failed.
    (requeue_stranded_jobs, 15),
]
# The fallback drain's interval: a push waits at most about this long for its sync
# in a formation without a `sync` process.
DRAIN_TICK_SECONDS = 1


def tick_waiting(scheduler: CronScheduler, job: CronJob) -> bool:
    """True while the tick's newest copy sits in its queue, not yet taken by a worker."""
    newest = job.get_job_ids(scheduler.connection, 0, 0)
    if not newest:
        return False
    queue = Queue(job.queue_name, connection=scheduler.connection)
    return scheduler.connection.lpos(queue.key, newest[0]) is not None


class TickScheduler(CronScheduler):
    """RQ's cron scheduler that never queues a tick behind a waiting copy of itself."""

    def enqueue_jobs(self) -> list[CronJob]:
        """Enqueue the due ticks whose previous copy is no longer waiting (rq's loop, plus that)."""
        enqueue_time = now()
        enqueued: list[CronJob] = []
        for job in self._cron_jobs:
            if not job.should_run():
                continue
            if tick_waiting(self, job):
                log.info("cron_tick_skipped tick=%s reason=previous_copy_waiting", job.name)
            else:
                job.enqueue(self.connection)
                enqueued.append(job)
            job.set_enqueue_time(enqueue_time)
        return enqueued


def scheduler() -> TickScheduler:
    """The `cron` process's scheduler with every tick of the table registered."""
    ticks = TickScheduler(connection=get_redis())
    for tick, seconds in TICKS:
        ticks.register(tick, queues.DEFAULT, interval=seconds, job_timeout=300, result_ttl=0)
    # Where no `sync` process runs, `worker` drains the sync requests (worker.sync.drain).
    ticks.register(
        drain_tick, queues.SYNC, interval=DRAIN_TICK_SECONDS, job_timeout=300, result_ttl=0
    )
    return ticks


def main() -> None:
    configure_logging(settings)
    scheduler().start()  # type: ignore[no-untyped-call]  # rq leaves it unannotated


if __name__ == "__main__":
    main()
