"""API v1: the team's failed background jobs (admins only, like the Failed work page).

    GET    /jobs/failed                     the team's failed jobs, newest first
    POST   /jobs/failed/{job_id}/requeue    back in its queue (the same job, the same id)
    POST   /jobs/failed/requeue             every one of the team's
    DELETE /jobs/failed/{job_id}            forgotten for good

`worker.failed_jobs` decides whose job each is and what may be shown: never a
job's arguments, and the error's last line with secrets and arguments
blanked. Another team's job id answers 404, as one that never failed. Jobs of
no team (cron ticks) are the operator's: `flask --app web jobs failed`.
"""

from __future__ import annotations

from datetime import datetime

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, Field

from web.api.common import ApiError
from web.api.operations import operation
from web.roles import admin_required
from worker.failed_jobs import (
    FailedJob,
    NoFailedJobError,
    delete,
    failed_jobs,
    requeue,
    requeue_all,
)

ADMIN_ONLY = "The token's user is a member, not an admin (`admin_only`, naming the admins)"
NOT_FOUND = "No failed job of this team has that id (requeued or deleted already?)"
JOB_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.:-]{1,128}$"}


class FailedJobOut(BaseModel):
    id: str
    function: str = Field(description='What the job does, in words: "Mailbox sync"')
    func_name: str = Field(description="The function RQ runs (a dotted path)")
    queue: str
    failed_at: datetime | None
    error: str = Field(description="The exception's last line; secrets and arguments blanked")


class FailedJobList(BaseModel):
    jobs: list[FailedJobOut]


class RequeuedOut(BaseModel):
    requeued: int


def _out(job: FailedJob) -> FailedJobOut:
    return FailedJobOut(
        id=job.id,
        function=job.function,
        func_name=job.func_name,
        queue=job.queue,
        failed_at=job.failed_at,
        error=job.error,
    )


@operation(
    "GET",
    "/jobs/failed",
    summary="List the team's failed background jobs",
    response=FailedJobList,
    errors={403: ADMIN_ONLY},
)
@admin_required
def list_failed_jobs() -> ResponseReturnValue:
    found = failed_jobs(g.team_id)
    return FailedJobList(jobs=[_out(job) for job in found]).model_dump(mode="json")


@operation(
    "POST",
    "/jobs/failed/<job_id>/requeue",
    summary="Requeue one failed job",
    response=FailedJobOut,
    errors={403: ADMIN_ONLY, 404: NOT_FOUND},
    path_params={"job_id": JOB_ID},
)
@admin_required
def requeue_failed_job(job_id: str) -> ResponseReturnValue:
    try:
        job = requeue(job_id, g.team_id)
    except NoFailedJobError:
        raise ApiError(404, "not_found", NOT_FOUND) from None
    return _out(job).model_dump(mode="json")


@operation(
    "POST",
    "/jobs/failed/requeue",
    summary="Requeue every failed job of the team",
    response=RequeuedOut,
    errors={403: ADMIN_ONLY},
)
@admin_required
def requeue_failed_jobs() -> ResponseReturnValue:
    return RequeuedOut(requeued=requeue_all(g.team_id)).model_dump(mode="json")


@operation(
    "DELETE",
    "/jobs/failed/<job_id>",
    summary="Delete one failed job for good",
    status=204,
    errors={403: ADMIN_ONLY, 404: NOT_FOUND},
    path_params={"job_id": JOB_ID},
)
@admin_required
def delete_failed_job(job_id: str) -> ResponseReturnValue:
    try:
        delete(job_id, g.team_id)
    except NoFailedJobError:
        raise ApiError(404, "not_found", NOT_FOUND) from None
    return "", 204
