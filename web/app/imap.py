"""Connecting an IMAP mailbox from the web app (host, port, security, login).

Owns `/mailboxes/imap`: the same checks as `POST /api/v1/mailboxes` (the
`MailboxCreate` schema; an IMAP and an SMTP login before anything is saved),
as a form whose errors name the field. The mailboxes page (`web.connect`) lists
the result; Gmail, Microsoft 365 and Exchange connect there.

Must never: echo a password back into the page, or log one.
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from werkzeug.routing import BuildError

from core.crypto import encrypt_json
from core.models import Mailbox, MailboxStatus, utcnow
from web.api.schemas import MailboxCreate
from web.app.common import FormErrors, app_blueprint, form_str, team_id, user
from web.auth import login_required
from web.db import db

bp = app_blueprint("imap", __name__)
log = logging.getLogger(__name__)

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
    if prefix == "smtp" and not password:
        password = request.form.get("imap_password") or ""  # most providers use one password
    return {
        "host": form_str(f"{prefix}_host"),
        "port": form_str(f"{prefix}_port") or "0",
        "username": form_str(f"{prefix}_username") or email,
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
    credentials = {
        "imap": body.imap.model_dump(),
        "smtp": body.smtp.model_dump(),
        "folders": body.folders,
        "append_to_sent": body.append_to_sent,
    }
    from worker.sync.base import ProviderError
    from worker.sync.registry import open_provider

    try:
        with open_provider(body.kind, body.email, credentials) as provider:
            provider.verify()
    except ProviderError as exc:
        field = "smtp_host" if "SMTP" in str(exc) else "imap_host"
        label = "SMTP" if field == "smtp_host" else "IMAP"
        errors.add(field, f"{label}: {exc} (check the server, port, security and password).")
        return _page(errors, 422)
    mailbox = Mailbox(
        team_id=team_id(),
        user_id=user().id,
        kind=body.kind,
        email=body.email.lower(),
        credentials_encrypted=encrypt_json(credentials),
        status=MailboxStatus.ACTIVE,
        created_at=utcnow(),
    )
    db().add(mailbox)
    try:
        db().commit()
    except IntegrityError:
        db().rollback()
        errors.add("email", f"Email address: {body.email} is already connected.")
        return _page(errors, 409)
    from worker.listener import announce_mailbox_change
    from worker.sync.engine import request_sync

    request_sync(mailbox.id)  # records the starting cursor right away
    announce_mailbox_change()
    log.info("mailbox_connected mailbox_id=%s kind=imap team_id=%s", mailbox.id, mailbox.team_id)
    return redirect(_done_url(f"{mailbox.email} is connected."))
