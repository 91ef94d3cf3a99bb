"""The cron table, loaded by `rq cron worker/cron.py` (the `cron` process).

Each entry is a cheap "tick" that finds due work and enqueues jobs with fixed
ids, so two cron processes (or a restart) never double the work itself.
"""

from rq import cron

from config import get_settings, queues
from config.logging import configure_logging
from worker.documents.jobs import recover_documents
from worker.rqsettings import REDIS_URL  # noqa: F401 - starts the embedded Redis if needed
from worker.salesforce.outbox import flush_all
from worker.sequences.jobs import enqueue_due_steps, recover_stuck_sends, resume_paused
from worker.sequences.oneoff import enqueue_due_one_offs
from worker.sync.engine import poll_mailboxes
from worker.sync.push import renew_due as renew_push

settings = get_settings()
configure_logging(settings)

cron.register(
    enqueue_due_steps,
    queues.DEFAULT,
    interval=settings.sequence_tick_seconds,
    job_timeout=300,
    result_ttl=0,
)
# One-off emails scheduled for later go out on the same tick as sequence steps.
cron.register(
    enqueue_due_one_offs,
    queues.DEFAULT,
    interval=settings.sequence_tick_seconds,
    job_timeout=300,
    result_ttl=0,
)
cron.register(
    poll_mailboxes,
    queues.DEFAULT,
    interval=max(5, settings.sync_poll_seconds // 4),
    job_timeout=300,
    result_ttl=0,
)
cron.register(
    flush_all,
    queues.DEFAULT,
    interval=settings.salesforce_flush_seconds,
    job_timeout=300,
    result_ttl=0,
)
cron.register(recover_stuck_sends, queues.DEFAULT, interval=60, job_timeout=300, result_ttl=0)
# Gmail watches and Graph subscriptions renewed a day before they lapse (worker/sync/push.py).
cron.register(renew_push, queues.DEFAULT, interval=900, job_timeout=300, result_ttl=0)
# Resuming a paused enrolment is due sequence work: it runs on the sequence tick.
cron.register(
    resume_paused,
    queues.DEFAULT,
    interval=settings.sequence_tick_seconds,
    job_timeout=300,
    result_ttl=0,
)

# Documents whose job was lost (Redis failover, a killed worker) are queued again.
cron.register(recover_documents, queues.DEFAULT, interval=60, job_timeout=300, result_ttl=0)
