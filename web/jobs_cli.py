"""The operator's view of failed background work: `flask --app web jobs …`.

    jobs failed [--json] [--team T]    every queue's failed jobs, newest first
    jobs requeue JOB_ID | --all        back in their queue (the same job, the same id)
    jobs delete JOB_ID                 forgotten for good

The operator sees every team's jobs and the jobs of no team (cron ticks), which
no team admin sees on the Failed work page; `--team` narrows to one team. The
same safe fields as the page (`worker.failed_jobs`): never a job's arguments,
and its error's last line with secrets and arguments blanked.
"""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup
from sqlalchemy import select

from core.db import session_scope
from core.models import Team
from worker.failed_jobs import NoFailedJobError, as_dict, delete, failed_jobs, requeue, requeue_all

jobs = AppGroup("jobs", help="Failed background jobs: list, requeue, delete.")


def _team_id(name: str | None) -> int | None:
    if name is None:
        return None
    with session_scope() as session:
        found = session.scalar(select(Team.id).where(Team.name == name.strip()))
    if found is None:
        raise click.ClickException(f"no team is named {name.strip()!r}")
    return int(found)


@jobs.command("failed")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@click.option("--team", "team_name", default=None, help="Only this team's jobs.")
def list_failed(as_json: bool, team_name: str | None) -> None:
    """Failed jobs of every queue: id, job, queue, failed at (UTC), the error's last line."""
    found = failed_jobs(_team_id(team_name))
    if as_json:
        click.echo(json.dumps([as_dict(job) for job in found], indent=2))
        return
    if not found:
        click.echo("no failed jobs")
        return
    rows = [
        (
            job.id,
            job.function,
            job.queue,
            job.failed_at.strftime("%Y-%m-%d %H:%M") if job.failed_at else "-",
            job.error,
        )
        for job in found
    ]
    header = ("id", "job", "queue", "failed UTC", "error")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        click.echo("  ".join([*cells, row[4]]).rstrip())


@jobs.command("requeue")
@click.argument("job_id", required=False)
@click.option("--all", "every", is_flag=True, help="Requeue every failed job.")
def requeue_command(job_id: str | None, every: bool) -> None:
    """Put a failed job (or --all) back in its queue."""
    if every == (job_id is not None):
        raise click.UsageError("give a JOB_ID (see `jobs failed`) or --all, not both")
    if every:
        count = requeue_all()
        click.echo(f"requeued {count} job{'' if count == 1 else 's'}")
        return
    assert job_id is not None
    try:
        job = requeue(job_id.strip())
    except NoFailedJobError:
        raise click.ClickException(f"no failed job has the id {job_id.strip()}") from None
    click.echo(f"requeued {job.id} ({job.function}) on queue {job.queue}")


@jobs.command("delete")
@click.argument("job_id")
def delete_command(job_id: str) -> None:
    """Forget a failed job for good."""
    try:
        job = delete(job_id.strip())
    except NoFailedJobError:
        raise click.ClickException(f"no failed job has the id {job_id.strip()}") from None
    click.echo(f"deleted {job.id} ({job.function})")
