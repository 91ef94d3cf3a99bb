"""The Outlook add-in's pages: the manifest, the task panes, and the sign-in dialog.

- ``/addons/outlook/manifest.xml``: what an admin uploads (`manifest.render_manifest`);
  a plain 409 sentence instead while `PUBLIC_BASE_URL` is not https (Office would
  refuse the file).
- ``/addons/outlook/compose`` and ``/read``: the task panes. They are shells that
  hold nothing of a team's: the pane's script asks API v1 for everything, with
  the add-in token as bearer (cookies may never reach a frame inside Outlook on the
  web). They are the only pages Sightline lets be framed, and only by Outlook's
  own origins (`FRAME_ANCESTORS`).
- ``/addons/outlook/functions``: the function file the manifest must name (no
  command runs a function; it loads Office.js and nothing else).
- ``/addons/outlook/signin``: opened by the pane in an Office dialog, a top-level
  window where our session cookie works. Signed out, it goes through the normal
  sign-in page first. Then the person confirms which account the add-in acts as
  (a POST with the session's CSRF token: a page elsewhere cannot mint a token by
  opening the URL), and the answer hands the token to the pane through
  `messageParent`, addressed to our own origin only.

Must never: let another site frame anything but the panes, put a token in a URL
or a log, or issue a token without the signed-in person's click.
"""

from __future__ import annotations

import logging
import re

from flask import Blueprint, Response, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from config import get_settings
from web.addons.outlook import tokens
from web.addons.outlook.manifest import PREFIX, render_manifest
from web.auth import current_user, login_required, protect

bp = Blueprint("outlook_addin", __name__, url_prefix=PREFIX)
protect(bp)
log = logging.getLogger(__name__)

OFFICE_JS = "https://appsforoffice.microsoft.com/lib/1/hosted/office.js"
_OFFICE_HOST = "https://appsforoffice.microsoft.com"
# Where Outlook on the web (work, school and personal accounts) and the new Outlook
# for Windows host add-in panes. Desktop Outlook shows the pane in a web view that is
# not framed by a page, so it needs nothing here.
FRAME_ANCESTORS = (
    "'self' https://outlook.office.com https://outlook.office365.com https://outlook.live.com "
    "https://*.outlook.com https://*.office.com https://*.office365.com "
    "https://*.officeapps.live.com https://*.microsoft365.com"
)


def _policy(frame_ancestors: str) -> str:
    return (
        f"default-src 'self'; script-src 'self' {_OFFICE_HOST}; style-src 'self'; "
        f"img-src 'self' data:; connect-src 'self' {_OFFICE_HOST}; "
        f"frame-src 'self' {_OFFICE_HOST}; object-src 'none'; base-uri 'none'; "
        f"form-action 'self'; frame-ancestors {frame_ancestors}"
    )


PANE_POLICY = _policy(FRAME_ANCESTORS)
DIALOG_POLICY = _policy("'none'")
STATE = re.compile(r"[A-Za-z0-9_-]{16,64}")


def _page(html: str, *, framed: bool) -> Response:
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PANE_POLICY if framed else DIALOG_POLICY
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    if not framed:
        response.headers["X-Frame-Options"] = "DENY"
    return response


NOT_HTTPS = (
    "Outlook loads add-ins over https only, and PUBLIC_BASE_URL is {base}. Set it to the "
    "https address people reach Sightline at, restart web, and download the manifest again."
)


@bp.get("/manifest.xml")
def manifest() -> ResponseReturnValue:
    base = get_settings().public_base_url
    if not base.startswith("https://"):
        # A manifest Office would refuse on upload, with a less helpful message.
        return Response(NOT_HTTPS.format(base=base), status=409, mimetype="text/plain")
    response = Response(render_manifest(), mimetype="application/xml")
    response.headers["Content-Disposition"] = 'inline; filename="sightline-outlook.xml"'
    return response


@bp.get("/compose")
def compose_pane() -> ResponseReturnValue:
    return _page(render_template("addons/outlook/compose.html", office_js=OFFICE_JS), framed=True)


@bp.get("/read")
def read_pane() -> ResponseReturnValue:
    return _page(render_template("addons/outlook/read.html", office_js=OFFICE_JS), framed=True)


@bp.get("/functions")
def function_file() -> ResponseReturnValue:
    return _page(render_template("addons/outlook/functions.html", office_js=OFFICE_JS), framed=True)


def _state() -> str | None:
    """The pane's nonce, echoed back so it takes only the answer to its own request."""
    given = request.values.get("state", "")
    return given if STATE.fullmatch(given) else None


@bp.route("/signin", methods=["GET", "POST"])
@login_required
def signin() -> ResponseReturnValue | BaseResponse:
    user = current_user()
    assert user is not None  # login_required
    state = _state()
    if state is None:
        page = render_template(
            "addons/outlook/signin.html",
            office_js=OFFICE_JS,
            user=user,
            state="",
            error="This sign-in window was not opened by the Outlook add-in. Close it and "
            "press “Sign in” in the Sightline pane.",
        )
        return _page(page, framed=False), 400
    if request.method == "GET":
        page = render_template(
            "addons/outlook/signin.html", office_js=OFFICE_JS, user=user, state=state, error=None
        )
        return _page(page, framed=False)
    token = tokens.issue(user)
    log.info("outlook_addin_token_issued user_id=%s team_id=%s", user.id, user.team_id)
    page = render_template(
        "addons/outlook/signed_in.html",
        office_js=OFFICE_JS,
        user=user,
        state=state,
        token=token,
    )
    return _page(page, framed=False)
