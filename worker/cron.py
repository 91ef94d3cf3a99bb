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
]

for tick, seconds in TICKS:
    cron.register(tick, queues.DEFAULT, interval=seconds, job_timeout=300, result_ttl=0)
