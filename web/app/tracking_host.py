"""The team's tracking host page: ``/settings/tracking-host``.

Set a host (stored pending), verify it (DNS, now), remove it; the status says
pending, verified or failed with the reason, and what CNAME record to add.
The API has the same (``/api/v1/team/tracking-host``); both call
`core.tracking_domains`. Admins only (`web.roles`).
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue

from core import tracking_domains
from core.outbound import OutboundError
from web.app.common import FormErrors, app_blueprint, form_str, team, user
from web.auth import login_required
from web.db import db
from web.roles import admin_required

bp = app_blueprint("tracking_host", __name__)
log = logging.getLogger(__name__)


def _page(
    errors: FormErrors | None = None, value: str | None = None, status: int = 200
) -> ResponseReturnValue:
    current = team()
    return (
        render_template(
            "app/tracking_host.html",
            team=current,
            status=tracking_domains.status(current),
            target=tracking_domains.targets()[0].lstrip("."),
            errors=errors or FormErrors(),
            value=(current.tracking_host or "") if value is None else value,
        ),
        status,
    )


@bp.get("/settings/tracking-host")
@login_required
@admin_required
def index() -> ResponseReturnValue:
    return _page()


@bp.post("/settings/tracking-host")
@login_required
@admin_required
def save() -> ResponseReturnValue:
    current = team()
    value = form_str("host", limit=300)
    try:
        host = tracking_domains.set_host(db(), current, value)
    except OutboundError as exc:
        db().rollback()
        errors = FormErrors()
        errors.add("host", str(exc))
        return _page(errors, value, 422)
    db().commit()
    log.info("tracking_host_set team_id=%s user_id=%s host=%s", current.id, user().id, host)
    flash(f"Saved. Add the CNAME record for {host}, then verify it.", "success")
    return redirect(url_for("tracking_host.index"))


@bp.post("/settings/tracking-host/verify")
@login_required
@admin_required
def verify() -> ResponseReturnValue:
    current = team()
    if not current.tracking_host:
        flash("Set a tracking host first.", "error")
        return redirect(url_for("tracking_host.index"))
    outcome = tracking_domains.verify(current)
    db().commit()
    if outcome == tracking_domains.HostStatus.VERIFIED:
        flash(f"{current.tracking_host} is verified: emails sent from now on use it.", "success")
    else:
        flash(f"Not verified: {current.tracking_host_error}", "error")
    return redirect(url_for("tracking_host.index"))


@bp.post("/settings/tracking-host/remove")
@login_required
@admin_required
def remove() -> ResponseReturnValue:
    current = team()
    tracking_domains.remove_host(current)
    db().commit()
    log.info("tracking_host_removed team_id=%s user_id=%s", current.id, user().id)
    flash("Removed. Emails sent from now on use the service's own links.", "success")
    return redirect(url_for("tracking_host.index"))
