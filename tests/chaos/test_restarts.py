"""What the chaos run found about Redis restarts, pinned down on a private Redis.

An RQ worker quit ("found an unhandled exception, quitting") when Redis went
away right after a job, outside the dequeue loop that retries; a Heroku dyno
that crashes is restarted with growing delays, and honcho (`make run`) stops
every process when one exits. Every client now retries with back-off for about
16 s (`core.redis.ResilientRedis`, also RQ's via `--connection-class`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import func, select

from config import Settings, get_settings
from core import redis as core_redis
from core.db import session_scope
from core.models import (
    Enrollment,
    EnrollmentState,
    EnrollmentTransition,
    Mailbox,
    Prospect,
    Sequence,
    SequenceStep,
    Team,
    utcnow,
)
from core.redis import ResilientRedis
from tests.conftest import service_environment
from tests.services.redis import PrivateRedisServer
from tests.stack import ROOT, Stack
from worker.queueing import enqueue

pytestmark = pytest.mark.integration
RESUME_QUEUE = "default"
RESUME = "worker.sequences.jobs.resume_paused"


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url  # Redis is what this is about


def test_a_command_waits_out_a_redis_restart(private_redis: PrivateRedisServer) -> None:
    client = ResilientRedis.from_url(private_redis.url())
    client.set("before", "1")
    private_redis.stop()
    answers: list[object] = []
    # Issued while Redis is down; the server is back 4 s later (longer than redis-py's
    # default retries last, about 2 s).
    command = threading.Thread(target=lambda: answers.append(client.get("before")))
    command.start()
    time.sleep(4.0)
    private_redis.start()  # from the main thread: spawned servers die with their thread
    command.join(timeout=30)
    assert answers == [b"1"]


def test_every_procfile_rq_process_uses_the_resilient_client() -> None:
    commands = [
        line.partition(":")[2]
        for line in (ROOT / "Procfile").read_text().splitlines()
        if " rq " in f" {line.partition(':')[2]} "
    ]
    assert commands, "no rq process in the Procfile"
    for command in commands:
        assert "--connection-class core.redis.ResilientRedis" in command, command


def _paused_enrolments(team_id: int, sequence_id: int, count: int, first: int) -> list[int]:
    """`count` enrolments paused until a moment that has passed: a resume job's work."""
    with session_scope() as session:
        ids = []
        for n in range(first, first + count):
            prospect = Prospect(team_id=team_id, email=f"p{n}@acme.test")
            session.add(prospect)
            session.flush()
            enrollment = Enrollment(
                team_id=team_id,
                sequence_id=sequence_id,
                prospect_id=prospect.id,
                state=EnrollmentState.PAUSED,
                resume_at=utcnow() - timedelta(seconds=1),
            )
            session.add(enrollment)
            session.flush()
            ids.append(enrollment.id)
        return ids


def _team_with_sequence() -> tuple[int, int]:
    with session_scope() as session:
        team = Team(name="Restarts")
        session.add(team)
        session.flush()
        mailbox = Mailbox(
            team_id=team.id, kind="imap", email="rep@seller.test", credentials_encrypted="-"
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Intro")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Hi", body_html="<p>Hi</p>")
        ]
        session.add(sequence)
        session.flush()
        return team.id, sequence.id


def test_the_worker_keeps_working_through_redis_restarts(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job enqueued around the restarts ran to the end, and did its work once.

    An empty queue would not show it: a job the worker dequeued and then lost, or
    one that failed on a dropped connection, leaves the queue empty too. So each
    batch of jobs has its own enrolments to resume, each job keeps its result, and
    the test reads back every job's status and what it resumed.
    """
    server = PrivateRedisServer(appendonly=True, appendfsync="everysec").start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url())
        get_settings.cache_clear()
        core_redis.get_redis.cache_clear()
        team_id, sequence_id = _team_with_sequence()
        environment = service_environment(env.database_url, server.url(), env.var_dir)
        stack = Stack(environment, tmp_path / "logs").start("worker")
        paused: list[int] = []
        jobs: list[str] = []
        try:
            deadline = time.monotonic() + 8
            restarts = 0
            while time.monotonic() < deadline or restarts < 5:
                paused += _paused_enrolments(team_id, sequence_id, 3, len(paused))
                for _ in range(4):  # a steady stream of quick jobs
                    jobs.append(f"resume-{len(jobs)}")
                    enqueue(RESUME_QUEUE, RESUME, retry=None, result_ttl=600, job_id=jobs[-1])
                time.sleep(0.3)
                server.restart()
                restarts += 1
            stack.wait_for(
                "every job to finish after the restarts",
                lambda: all(_status(j) in (JobStatus.FINISHED, JobStatus.FAILED) for j in jobs),
                timeout=60,
            )
            assert stack.running["worker"].poll() is None, stack.logs()
        finally:
            stack.stop()
        statuses = {j: _status(j) for j in jobs}
        assert set(statuses.values()) == {JobStatus.FINISHED}, statuses
        resumed: list[int] = [
            Job.fetch(j, connection=core_redis.get_redis()).return_value() or 0 for j in jobs
        ]
        assert sum(resumed) == len(paused), resumed  # each enrolment resumed exactly once
        with session_scope() as session:
            states = Counter(
                session.scalars(select(Enrollment.state).where(Enrollment.id.in_(paused)))
            )
            resumes = session.scalar(
                select(func.count())
                .select_from(EnrollmentTransition)
                .where(EnrollmentTransition.to_state == EnrollmentState.ACTIVE)
            )
        assert states == {EnrollmentState.ACTIVE: len(paused)}
        assert resumes == len(paused)
    finally:
        server.close()
        core_redis.get_redis.cache_clear()


def _status(job_id: str) -> JobStatus | None:
    try:
        return Job.fetch(job_id, connection=core_redis.get_redis()).get_status()
    except NoSuchJobError:
        return None
