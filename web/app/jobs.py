"""Failed work: ``/admin/jobs`` (admins). The team's background jobs that failed, and requeue.

    GET  /admin/jobs                         the team's failed jobs, newest first
    POST /admin/jobs/requeue                 one (`job_id`) or all (`all`) back in its queue
    POST /admin/jobs/delete                  forget one (`job_id`)

`worker.failed_jobs` reads RQ's failed registries of every queue and decides
whose job each is; a team's admin sees their team's only (another team's job
id answers as one that does not exist). Only safe fields are shown: the
function's human name, queue, time, and the exception's last line with
secrets and the job's arguments blanked. Jobs of no team (cron ticks) are the
operator's: `flask --app web jobs failed`.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from web.app.common import app_blueprint, form_str, team_id, user
from web.auth import login_required
from web.roles import admin_required
from worker.failed_jobs import NoFailedJobError, delete, failed_jobs, requeue, requeue_all

bp = app_blueprint("jobs", __name__)
log = logging.getLogger(__name__)


@bp.get("/admin/jobs")
@login_required
@admin_required
def index() -> ResponseReturnValue:
    return render_template("app/jobs.html", jobs=failed_jobs(team_id()))


@bp.post("/admin/jobs/requeue")
@login_required
@admin_required
def requeue_page() -> ResponseReturnValue:
    if request.form.get("all") == "1":
        count = requeue_all(team_id())
        flash(f"{count} job{'' if count == 1 else 's'} queued again.", "success")
    else:
        try:
            job = requeue(form_str("job_id", limit=200), team_id())
        except NoFailedJobError:
            flash(
                "That job is no longer in the failed list (requeued or deleted already).", "error"
            )
        else:
            flash(f"{job.function} ({job.id}) is queued again.", "success")
    log.info("failed_jobs_requeue team_id=%s user_id=%s", team_id(), user().id)
    return redirect(url_for("jobs.index"), code=303)


@bp.post("/admin/jobs/delete")
@login_required
@admin_required
def delete_page() -> ResponseReturnValue:
    try:
        job = delete(form_str("job_id", limit=200), team_id())
    except NoFailedJobError:
        flash("That job is no longer in the failed list (requeued or deleted already).", "error")
    else:
        flash(f"{job.function} ({job.id}) is deleted.", "success")
    return redirect(url_for("jobs.index"), code=303)
