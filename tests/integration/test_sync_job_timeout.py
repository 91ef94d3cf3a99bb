"""RQ's job timeout during classification fails the sync job; no message is lost or misread.

`rq.timeouts.JobTimeoutException` is an `Exception`, raised by SIGALRM wherever
the job happens to be (the `sync` process is a SyncWorker: the job runs in its
main thread). Before this was handled, `except Exception` caught it inside
classification (the message came out `other`: a reply lost, the sequence went
on) or around the message (quarantined as "JobTimeoutException"), and the job
ran on past its limit as if nothing had happened. Now the job fails, its batch's
cursor is not saved, and the next sync reads every message.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from rq.job import Job, JobStatus
from sqlalchemy import select

from config import get_settings, queues
from core.db import session_scope
from core.models import Enrollment, InboundMessage, Mailbox
from core.redis import get_redis
from tests.fuzz.test_hostile_mail_sync import slow_reply
from tests.integration.test_sync_engine import setup
from tests.services.dovecot import DovecotServer
from worker.queueing import enqueue, get_queue
from worker.sync.engine import SYNC_JOB, sync_mailbox
from worker.sync.sync_worker import SyncWorker

__all__ = ["setup"]  # the fixture, shared with test_sync_engine

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url  # RQ and the sync are what this is about


@contextmanager
def _rq_owns_the_alarm() -> Iterator[None]:
    """Let rq's death penalty take SIGALRM, then give it back (pytest-timeout may use it).

    The garbage collector is off meanwhile: Hypothesis (loaded by other tests in
    the same run) times collections with a gc callback, and an exception a
    signal handler raises inside a callback is printed and dropped, which the
    `sync` process never sees.
    """
    handler, timer = signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL)
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        signal.signal(signal.SIGALRM, handler)
        if timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *timer)


def test_a_job_timeout_during_classification_fails_the_job_and_loses_nothing(
    setup: dict[str, Any], dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(2):
        raw = slow_reply(f"p{n}@acme.test", setup["sender"], setup["message_id"], parts=150_000)
        dovecot.deliver(setup["sender"], raw)
    # A budget far past the job's 1 s timeout: the timeout comes first, in the first
    # message's classification (~3 s of CPU on an idle machine; its fetch ~50 ms). With
    # ~1 s messages the first one could finish in time on a quiet machine and be
    # recorded, which is right but not what this test is about.
    monkeypatch.setenv("SIGHTLINE_CLASSIFY_BUDGET_MS", "600000")
    get_settings.cache_clear()
    job_id = f"timeout-{setup['mailbox_id']}"
    enqueue(queues.SYNC, SYNC_JOB, setup["mailbox_id"], timeout=1, retry=None, job_id=job_id)
    with _rq_owns_the_alarm():
        SyncWorker([get_queue(queues.SYNC)], connection=get_redis()).work(burst=True)

    job = Job.fetch(job_id, connection=get_redis())
    assert job.get_status() == JobStatus.FAILED
    result = job.latest_result()
    assert result is not None and "JobTimeoutException" in (result.exc_string or "")
    with session_scope() as session:
        # Nothing recorded, nothing read as `other`, nothing quarantined for the timeout.
        assert session.scalars(select(InboundMessage)).all() == []
        assert session.get_one(Enrollment, setup["enrollment_id"]).state == "active"
        assert session.get_one(Mailbox, setup["mailbox_id"]).sync_cursor is None

    # Nothing was lost: the next sync, within its budget, reads both replies.
    monkeypatch.setenv("SIGHTLINE_CLASSIFY_BUDGET_MS", "30000")
    get_settings.cache_clear()
    stats = sync_mailbox(setup["mailbox_id"])
    assert stats.outcomes == {"recorded": 2} and stats.quarantined == 0, stats
    with session_scope() as session:
        assert session.get_one(Enrollment, setup["enrollment_id"]).state == "replied"
