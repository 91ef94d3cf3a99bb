"""The team's settings page: ``/settings``.

One switch so far: List-Unsubscribe and List-Unsubscribe-Post (RFC 8058
one-click) on sequence emails, on by default. The API has the same
(``/api/v1/team``). Roles do not exist yet: any signed-in user of the team may
change it.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from web.app.common import app_blueprint, team, user
from web.auth import login_required
from web.db import db

bp = app_blueprint("team_settings", __name__)
log = logging.getLogger(__name__)


@bp.get("/settings")
@login_required
def index() -> ResponseReturnValue:
    return render_template("app/team_settings.html", team=team())


@bp.post("/settings")
@login_required
def save() -> ResponseReturnValue:
    current = team()
    current.unsubscribe_headers = request.form.get("unsubscribe_headers") == "on"
    db().commit()
    log.info(
        "team_settings_saved team_id=%s user_id=%s unsubscribe_headers=%s",
        current.id,
        user().id,
        current.unsubscribe_headers,
    )
    flash("Settings saved.", "success")
    return redirect(url_for("team_settings.index"))
