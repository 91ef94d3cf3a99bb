"""What every HTML page shares beyond base.html: times, error pages, the favicon.

- Times: the `utc` (and `when`) template filter writes a stored time as
  `<time datetime="2026-12-06T14:05:00Z" title="2026-12-06 14:05 UTC">Dec 6, 2026
  14:05 UTC</time>`. `static/time.js` (loaded by base.html) shows it in the
  browser's own zone ("Dec 6, 9:05 AM EST"), also for times a script adds later
  (the Live Feed's items). The zone is the browser's, not a per-user setting:
  it is right on a laptop that travels and needs no settings page; the UTC text
  stays readable where scripts do not run, and in the title.
- Error pages: 403, 404, 405 and 500 render inside the normal layout: the
  navigation for a signed-in user, a link to sign in for anyone else. Paths
  under the API keep their JSON errors (`web.api.common`).
- `/favicon.ico`: browsers and crawlers ask for it whatever the page links;
  it answers with the same SVG as `static/favicon.svg`.
- The Salesforce banner: while the team's activities wait for a missing or
  broken Salesforce connection, every signed-in page says so ("12 activities
  are waiting: Salesforce is not connected — Connect"; a member is told whom
  to ask). `salesforce_banner()` asks `worker.salesforce.org_status.banner`
  once per request: one lookup by team, plus one index-only count only while
  the connection is missing or broken (`bench/banner_cost.py`).

Must never: turn an error inside an error page into a second traceback for the
user (the 500 page falls back to plain text, and the failure is logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape
from werkzeug.exceptions import HTTPException, InternalServerError

from web.api.common import API_PREFIX, unrouted_json
from web.auth import current_user
from web.db import db
from web.roles import admins_sentence
from worker.salesforce.org_status import banner

log = logging.getLogger(__name__)
bp = Blueprint("layout", __name__)

# What the page says for each status: a title and what to do next.
MESSAGES = {
    403: ("Not allowed", "This page belongs to another team, or needs a different role."),
    404: ("Page not found", "The page may have moved, or the link may be incomplete."),
    405: ("Page not found", "This address does not answer that kind of request."),
    500: ("Something went wrong", "The error was logged. Try again in a moment."),
}


def time_element(value: datetime | str | None) -> Markup | str:
    """A stored time as a `<time>` element that static/time.js shows in the reader's zone.

    `value` is a datetime (naive ones are UTC, as stored) or its ISO 8601 text.
    """
    if value is None or value == "":
        return "\u2014"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    machine = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    title = when.strftime("%Y-%m-%d %H:%M UTC")
    text = f"{when:%b} {when.day}, {when.year} {when:%H:%M} UTC"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(machine, title, escape(text))


def error_page(exc: HTTPException) -> ResponseReturnValue:
    """An HTTP error as a page of the site (or as JSON under the API's prefix)."""
    if request.path == API_PREFIX or request.path.startswith(f"{API_PREFIX}/"):
        return unrouted_json(exc)
    status = exc.code or 500
    title, advice = MESSAGES.get(status, (exc.name, ""))
    if status == 400 and exc.description:
        advice = exc.description
    response = current_app.make_response(
        (render_template("error.html", status=status, title=title, advice=advice), status)
    )
    allow = exc.get_response().headers.get("Allow")
    if allow:  # a 405 says which methods would do
        response.headers["Allow"] = allow
    return response


def server_error(exc: InternalServerError) -> ResponseReturnValue:
    try:
        return error_page(exc)
    except Exception:  # the page itself failed (the database is down, say)
        log.exception("error_page_failed status=500 path=%s", request.path)
        return (
            "Something went wrong. The error was logged; try again in a moment.",
            500,
            {"Content-Type": "text/plain; charset=utf-8"},
        )


@dataclass(frozen=True)
class SalesforceBanner:
    text: str  # "12 activities are waiting: Salesforce is not connected"
    action: str | None  # an admin's link text: "Connect", "Reconnect"
    url: str | None
    ask: str | None  # a member's: whom to ask


def salesforce_banner() -> SalesforceBanner | None:
    """The banner for the signed-in user's team, or None; asked once per request."""
    if "salesforce_banner" in g:
        cached: SalesforceBanner | None = g.salesforce_banner
        return cached
    user = current_user()
    found = banner(db(), user.team_id) if user is not None else None
    shown = None
    if user is not None and found is not None:
        noun = "activity is" if found.count == 1 else "activities are"
        text = f"{found.count} {noun} waiting: {found.sentence}"
        if user.is_admin:
            action = "Reconnect" if found.code == "token_revoked" else "Connect"
            shown = SalesforceBanner(text, action, url_for("salesforce_page.index"), None)
        else:
            shown = SalesforceBanner(text, None, None, admins_sentence(user.team_id))
    g.salesforce_banner = shown
    return shown


@bp.get("/favicon.ico")
def favicon() -> ResponseReturnValue:
    static = current_app.static_folder
    assert static is not None
    return send_from_directory(static, "favicon.svg", mimetype="image/svg+xml", max_age=86400)


def init_app(app: Flask) -> None:
    """Call after the API's blueprints: these handlers replace its app-wide 404/405 one."""
    app.register_blueprint(bp)
    for status in (403, 404, 405):
        app.register_error_handler(status, error_page)
    app.register_error_handler(InternalServerError, server_error)
    app.jinja_env.filters["utc"] = time_element
    app.jinja_env.filters["when"] = time_element
    app.jinja_env.globals["salesforce_banner"] = salesforce_banner
