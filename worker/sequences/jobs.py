"""RQ entry points for sequences. Each takes ids and is safe to run twice."""

from __future__ import annotations

import logging
from datetime import timedelta

from config import get_settings, queues
from core.db import session_scope
from core.models import utcnow
from worker.queueing import enqueue_once, job_started
from worker.sequences import freshness
from worker.sequences.claiming import claim_due_step, due_enrollments, stuck_sends
from worker.sequences.delivering import deliver
from worker.sequences.enrolling import resume_due

log = logging.getLogger(__name__)

DUE_BATCH = 1000
# A marker outlives a job killed before it started only this long (see
# worker/sync/engine.py QUEUED_MARKER_SECONDS); claims make a spare job harmless.
STEP_MARKER_SECONDS = 120


def enqueue_due_steps() -> int:
    """Cron: queue a send job for every enrolment whose next step is due.

    One waiting job per enrolment and step, so a tick that runs while the
    previous tick's jobs are still queued adds nothing.
    """
    with session_scope() as session:
        due = due_enrollments(session, utcnow(), DUE_BATCH)
    queued = 0
    for enrollment_id, step in due:
        queued += enqueue_once(
            f"step:{enrollment_id}:{step}",
            queues.SEND,
            "worker.sequences.jobs.send_due_step",
            enrollment_id,
            step,
            ttl=STEP_MARKER_SECONDS,
            retry=None,  # the claim is the retry point; stuck sends are recovered below
        )
    if queued:
        log.info("due_steps_queued count=%s", queued)
    return queued


def send_due_step(enrollment_id: int, step: int) -> str:
    """Claim the enrolment's due step (if still due and active) and send it.

    A follow-up step waits, unclaimed and still due, until its mailbox is known
    fresh (worker.sequences.freshness): a reply that arrived before it halts it.
    """
    job_started(f"step:{enrollment_id}:{step}")
    if not freshness.ready_to_send(enrollment_id, step):
        return "waiting for a fresh sync"
    with session_scope() as session:
        sent = claim_due_step(session, enrollment_id, utcnow())
        sent_id = sent.id if sent else None
    if sent_id is None:
        return "nothing due"
    return deliver(sent_id).status


def deliver_message(sent_message_id: int) -> str:
    """Hand over an already claimed message (retries and recovery)."""
    job_started(f"deliver:{sent_message_id}")
    return deliver(sent_message_id).status


def recover_stuck_sends() -> int:
    """Cron: re-deliver claimed messages whose hand-over never finished."""
    with session_scope() as session:
        stuck_after = timedelta(seconds=get_settings().send_recovery_seconds)
        ids = stuck_sends(session, utcnow() - stuck_after, DUE_BATCH)
    return sum(
        enqueue_once(
            f"deliver:{sent_id}",
            queues.SEND,
            "worker.sequences.jobs.deliver_message",
            sent_id,
            ttl=STEP_MARKER_SECONDS,
        )
        for sent_id in ids
    )


def resume_paused() -> int:
    """Cron: resume enrolments paused until a date that has come."""
    with session_scope() as session:
        return resume_due(session, utcnow())
