"""The team's settings page: ``/settings``, every team-wide switch on one page. Admins only.

    tracking on by default   opens (pixel) and clicks (rewritten links) in new emails
                             and sequences; a sequence or an email may still choose
                             for itself (`worker.sequences.messages`), and a prospect
                             marked "do not track" is never tracked
    unsubscribe headers      List-Unsubscribe and List-Unsubscribe-Post (RFC 8058
                             one-click) on sequence emails, on by default

The page also points to the team's settings that have pages of their own (the
tracking host, the opt-out list, members, Salesforce), so an admin finds them
all here. The API has the same switches (``/api/v1/team``). A member reaching
this page gets `web.roles`' 403, which names the admins.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from web.app.common import app_blueprint, team, user
from web.auth import login_required
from web.db import db
from web.roles import admin_required

bp = app_blueprint("team_settings", __name__)
log = logging.getLogger(__name__)


@bp.get("/settings")
@login_required
@admin_required
def index() -> ResponseReturnValue:
    return render_template("app/team_settings.html", team=team())


@bp.post("/settings")
@login_required
@admin_required
def save() -> ResponseReturnValue:
    current = team()
    # Unticked checkboxes are not sent: both switches are the form's whole state.
    current.unsubscribe_headers = request.form.get("unsubscribe_headers") == "on"
    current.tracking_enabled = request.form.get("tracking_enabled") == "on"
    db().commit()
    log.info(
        "team_settings_saved team_id=%s user_id=%s unsubscribe_headers=%s tracking_enabled=%s",
        current.id,
        user().id,
        current.unsubscribe_headers,
        current.tracking_enabled,
    )
    flash("Settings saved.", "success")
    return redirect(url_for("team_settings.index"))
