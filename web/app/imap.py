"""Connecting an IMAP mailbox from the web app (host, port, security, login).

Owns `/mailboxes/imap`: `POST /api/v1/mailboxes` as a form. Both validate the
`MailboxCreate` schema and then call `web.connect.connect_imap` (an IMAP and an
SMTP login before anything is saved, credentials stored encrypted); here the
errors name the form's field and the server that refused. Empty SMTP user name
and password mean "the same as IMAP". The mailboxes page (`web.connect`) lists
the result; Gmail, Microsoft 365 and Exchange connect there.

Must never: echo a password back into the page, or log one.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from werkzeug.routing import BuildError

from web.api import ApiError
from web.api.schemas import MailboxCreate
from web.app.common import FormErrors, app_blueprint, form_str, team_id, user
from web.auth import login_required

bp = app_blueprint("imap", __name__)

LABELS = {
    "email": "Email address",
    "imap.host": "IMAP server",
    "imap.port": "IMAP port",
    "imap.username": "IMAP user name",
    "imap.password": "IMAP password",
    "imap.security": "IMAP security",
    "smtp.host": "SMTP server",
    "smtp.port": "SMTP port",
    "smtp.username": "SMTP user name",
    "smtp.password": "SMTP password",
    "smtp.security": "SMTP security",
}
DEFAULTS = {
    "imap_port": "993",
    "imap_security": "tls",
    "smtp_port": "587",
    "smtp_security": "starttls",
}


def _values() -> dict[str, str]:
    if request.method != "POST":
        return dict(DEFAULTS)
    return {k: form_str(k) for k in request.form if "password" not in k and k != "csrf_token"}


def _page(errors: FormErrors, status: int = 200) -> ResponseReturnValue:
    return render_template("app/imap.html", values=_values(), errors=errors), status


def _server(prefix: str, email: str) -> dict[str, object]:
    password = request.form.get(f"{prefix}_password") or ""
    username = form_str(f"{prefix}_username")
    if prefix == "smtp":
        # Most providers use one login for both: empty SMTP fields mean "same as IMAP".
        password = password or request.form.get("imap_password") or ""
        username = username or form_str("imap_username")
    return {
        "host": form_str(f"{prefix}_host"),
        "port": form_str(f"{prefix}_port") or "0",
        "username": username or email,
        "password": password,
        "security": form_str(f"{prefix}_security"),
    }


def _done_url(message: str) -> str:
    """The mailboxes page (it shows `message`), or compose when that page is not installed."""
    try:
        return url_for("mailboxes.page", message=message)
    except BuildError:
        flash(message, "ok")
        return url_for("emails.compose")


@bp.route("/mailboxes/imap", methods=["GET", "POST"])
@login_required
def connect() -> ResponseReturnValue:
    if request.method == "GET":
        return _page(FormErrors())
    errors = FormErrors()
    email = form_str("email")
    body = None
    try:
        body = MailboxCreate.model_validate(
            {
                "kind": "imap",
                "email": email,
                "imap": _server("imap", email),
                "smtp": _server("smtp", email),
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            location = ".".join(str(p) for p in error["loc"])
            field = location.replace(".", "_")
            label = LABELS.get(location, location)
            message = str(error["msg"]).removeprefix("Value error, ")
            if "password" in location and error["type"] == "string_too_short":
                message = "required"
            errors.add(field, f"{label}: {message}.")
    if body is None or errors:
        return _page(errors, 422)
    from web.connect import connect_imap

    try:
        mailbox = connect_imap(team_id=team_id(), user_id=user().id, body=body)
    except ApiError as exc:
        if exc.code == "mailbox_unreachable":
            server = "smtp" if "smtp" in (exc.fields or {}) else "imap"
            errors.add(
                f"{server}_host",
                f"{server.upper()}: {exc.message} "
                "(check the server, port, security, user name and password).",
            )
            return _page(errors, 422)
        errors.add("email", f"Email address: {body.email} is already connected.")
        return _page(errors, 409)
    return redirect(_done_url(f"{mailbox.email} is connected."))
