"""Failed background jobs: RQ's failed-job registries of every queue, told safely, and put back.

What the Failed work page (`/admin/jobs`), its API and `flask --app web jobs`
share. A job lands in a queue's `FailedJobRegistry` when it raised after its
retries (or its work horse died); RQ keeps it for the job's `failure_ttl`
(a week, `worker.queueing.enqueue`), and nothing runs it again unless a
person requeues it.

What is shown, and why only that: the job id, a human name for its function,
its queue, when it failed, and the exception's last line. Never its
arguments, and the last line with every configured secret and every argument
of the job blanked out: jobs take ids, but a message may quote whatever it was
handed, and an exception from a provider's SDK may quote a token.

Whose job is it? Jobs take ids, not teams. `TEAM_OF` maps each per-team job
function to the row its first argument names (a mailbox, an enrolment, a sent
message, a document ...), whose `team_id` decides. A team's admin sees and acts
on their team's jobs only; jobs of no team (cron ticks) or of a row since
deleted are the operator's, through the command line (`team_id=None`: all).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from config import get_settings, queues
from core.db import session_scope
from core.models import Document, Enrollment, Mailbox, OneOffEmail, SentMessage
from core.models.base import Base
from core.redis import get_redis
from worker.queueing import get_queue

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_ERROR = 300
LIST_LIMIT = 500

# What each job does, in a person's words (unknown functions: their name, spelled out).
NAMES = {
    "worker.salesforce.outbox.flush_team_job": "Salesforce write",
    "worker.salesforce.limits.refresh_limits_job": "Salesforce limits read",
    "worker.sync.engine.sync_mailbox_job": "Mailbox sync",
    "worker.sync.push.renew_push_job": "Push subscription renewal",
    "worker.sync.push.disconnect_job": "Mailbox disconnect",
    "worker.sequences.jobs.send_due_step": "Sequence step send",
    "worker.sequences.jobs.deliver_message": "Email delivery",
    "worker.sequences.oneoff.send_one_off": "One-off email send",
    "worker.documents.jobs.process_document_job": "Document conversion",
    "worker.documents.jobs.check_document_job": "Document check",
}

# The row a per-team job's first argument names; None: the argument is the team's id.
TEAM_OF: dict[str, type[Base] | None] = {
    "worker.salesforce.outbox.flush_team_job": None,
    "worker.salesforce.limits.refresh_limits_job": None,
    "worker.sync.engine.sync_mailbox_job": Mailbox,
    "worker.sync.push.renew_push_job": Mailbox,
    "worker.sync.push.disconnect_job": Mailbox,
    "worker.sequences.jobs.send_due_step": Enrollment,
    "worker.sequences.jobs.deliver_message": SentMessage,
    "worker.sequences.oneoff.send_one_off": OneOffEmail,
    "worker.documents.jobs.process_document_job": Document,
    "worker.documents.jobs.check_document_job": Document,
}


class NoFailedJobError(LookupError):
    """No failed job has that id (for this team)."""


@dataclass(frozen=True)
class FailedJob:
    id: str
    function: str  # "Mailbox sync"
    func_name: str  # the dotted path RQ stores
    queue: str
    failed_at: datetime | None
    error: str  # the exception's last line, secrets blanked
    team_id: int | None


def human_name(func_name: str) -> str:
    known = NAMES.get(func_name)
    if known:
        return known
    last = func_name.rsplit(".", 1)[-1].removesuffix("_job").replace("_", " ").strip()
    return last[:1].upper() + last[1:] if last else "Unknown job"


def _secrets_in(job: Job) -> list[str]:
    """Everything that must not appear in the error shown: settings' secrets, the job's args."""
    values: list[str] = list(get_settings().secrets_to_redact())
    try:
        arguments = [*job.args, *job.kwargs.values()]
    except Exception:  # noqa: BLE001 - arguments that no longer load are not shown either
        arguments = []
    for value in arguments:
        if isinstance(value, (str, bytes)):
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if len(text) >= 4:
                values.append(text)
    return sorted(set(values), key=len, reverse=True)


def last_line(job: Job) -> str:
    """The exception's last line (`ValueError: …`), with secrets and arguments blanked."""
    result = job.latest_result()
    text = (result.exc_string if result is not None else None) or ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "(no error was recorded: the work horse may have been killed)"
    for secret in _secrets_in(job):
        line = line.replace(secret, "[redacted]")
    return line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 1] + "\u2026"


def _first_argument(job: Job) -> Any:
    try:
        return job.args[0] if job.args else None
    except Exception as exc:  # noqa: BLE001 - arguments that no longer load name no team
        log.warning("failed_job_args_unreadable job_id=%s error=%s", job.id, type(exc).__name__)
        return None


def _teams(jobs: list[Job]) -> dict[str, int | None]:
    """Job id → the team its first argument belongs to (None: no team, or unknown)."""
    wanted: dict[type[Base], dict[int, list[str]]] = defaultdict(dict)
    teams: dict[str, int | None] = {}
    for job in jobs:
        teams[job.id] = None
        func = job.func_name or ""
        if func not in TEAM_OF:
            continue
        first = _first_argument(job)
        if not isinstance(first, int):
            continue
        model = TEAM_OF[func]
        if model is None:
            teams[job.id] = first
        else:
            wanted[model].setdefault(first, []).append(job.id)
    with session_scope() as session:
        for model, by_id in wanted.items():
            rows = session.execute(
                select(model.id, model.team_id).where(model.id.in_(list(by_id)))  # type: ignore[attr-defined]
            )
            for row_id, team_id in rows:
                for job_id in by_id[int(row_id)]:
                    teams[job_id] = int(team_id)
    return teams


def _failed_registries() -> list[FailedJobRegistry]:
    return [FailedJobRegistry(queue=get_queue(name)) for name in queues.ALL]


def _failed_at(job: Job) -> datetime | None:
    when = job.ended_at
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def failed_jobs(team_id: int | None = None, *, limit: int = LIST_LIMIT) -> list[FailedJob]:
    """Failed jobs, newest first: the team's (or every one, for the operator: None)."""
    redis = get_redis()
    jobs: list[Job] = []
    for registry in _failed_registries():
        ids = registry.get_job_ids(desc=True)
        jobs.extend(job for job in Job.fetch_many(ids, connection=redis) if job is not None)
    teams = _teams(jobs)
    found = [
        FailedJob(
            id=job.id,
            function=human_name(job.func_name or ""),
            func_name=job.func_name or "",
            queue=job.origin,
            failed_at=_failed_at(job),
            error=last_line(job),
            team_id=teams[job.id],
        )
        for job in jobs
        if team_id is None or teams[job.id] == team_id
    ]
    found.sort(key=lambda j: j.failed_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return found[:limit]


def _job(job_id: str, team_id: int | None) -> tuple[Job, FailedJobRegistry]:
    if not JOB_ID.fullmatch(job_id):
        raise NoFailedJobError(job_id)
    try:
        job = Job.fetch(job_id, connection=get_redis())
    except NoSuchJobError:
        raise NoFailedJobError(job_id) from None
    registry = FailedJobRegistry(queue=get_queue(job.origin))
    if job.id not in registry.get_job_ids():
        raise NoFailedJobError(job_id)
    if team_id is not None and _teams([job])[job.id] != team_id:
        raise NoFailedJobError(job_id)  # another team's job is as absent as one that never was
    return job, registry


def requeue(job_id: str, team_id: int | None = None) -> FailedJob:
    """Put one failed job back at the end of its queue. Raises NoFailedJobError."""
    job, registry = _job(job_id, team_id)
    shown = _shown(job, team_id)
    try:
        registry.requeue(job)
    except InvalidJobOperation:  # requeued or deleted a moment ago: another person got there first
        raise NoFailedJobError(job_id) from None
    log.info("failed_job_requeued job_id=%s func=%s queue=%s", job.id, job.func_name, job.origin)
    return shown


def requeue_all(team_id: int | None = None) -> int:
    """Requeue every failed job (of the team, or all). How many went back."""
    done = 0
    for failed in failed_jobs(team_id, limit=10**9):
        try:
            requeue(failed.id, team_id)
        except NoFailedJobError:
            continue
        done += 1
    return done


def delete(job_id: str, team_id: int | None = None) -> FailedJob:
    """Forget one failed job for good (its record and its place in the registry)."""
    job, _registry = _job(job_id, team_id)
    shown = _shown(job, team_id)
    job.delete()
    log.info("failed_job_deleted job_id=%s func=%s queue=%s", job.id, job.func_name, job.origin)
    return shown


def _shown(job: Job, team_id: int | None) -> FailedJob:
    return FailedJob(
        id=job.id,
        function=human_name(job.func_name or ""),
        func_name=job.func_name or "",
        queue=job.origin,
        failed_at=_failed_at(job),
        error=last_line(job),
        team_id=team_id,
    )


def as_dict(job: FailedJob) -> dict[str, Any]:
    """The safe fields, as the command line's --json and the API print them."""
    return {
        "id": job.id,
        "function": job.function,
        "func_name": job.func_name,
        "queue": job.queue,
        "failed_at": job.failed_at.isoformat() if job.failed_at else None,
        "error": job.error,
    }
