"""Connecting an IMAP mailbox from the web app (host, port, security, login).

Owns `/mailboxes/imap`: `POST /api/v1/mailboxes` as a form. Both validate the
`MailboxCreate` schema and then call `worker.sync.connecting.connect_imap` (an IMAP
and an SMTP login before anything is saved, credentials stored encrypted); here the
errors name the form's field and the server that refused. Empty SMTP user name
and password mean "the same as IMAP". With `?mailbox_id=` (the mailboxes page's
Reconnect) the form is filled in with that mailbox's stored servers and user
names, never its passwords; connecting the same address again reconnects it.
The mailboxes page (`web.connect.page`) lists the result; Gmail, Microsoft 365 and
Exchange connect there.

Must never: echo a password back into the page, or log one; show bytes a server
sent other than its well-formed answer to the login, a refusal or a "not now"
(worker.sync.imap_connect); or connect anywhere the outbound policy (core.outbound)
refuses. A "not now" is told as such: try again later, not "check the password".
"""

from __future__ import annotations

import logging

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from werkzeug.routing import BuildError

from core.crypto import CredentialsError, decrypt_json
from core.models import Mailbox, MailboxKind
from web.api.common import CONNECT_STATUS
from web.api.schemas import MailboxCreate
from web.app.common import FormErrors, app_blueprint, form_str, owned, team_id, user
from web.auth import login_required
from web.db import db
from web.validation import labelled_messages
from worker.sync.connecting import ConnectError, connect_imap

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
DEFAULT_PORTS = {
    ("imap", "tls"): "993",
    ("imap", "starttls"): "143",
    ("imap", "none"): "143",
    ("smtp", "tls"): "465",
    ("smtp", "starttls"): "587",
    ("smtp", "none"): "25",
}
DEFAULTS = {
    "imap_port": "993",
    "imap_security": "tls",
    "smtp_port": "587",
    "smtp_security": "starttls",
}


def _stored_values(mailbox_id: int) -> dict[str, str]:
    """A mailbox's servers and user names as form values, to reconnect it (no passwords)."""
    mailbox = owned(Mailbox, mailbox_id)
    values = {**DEFAULTS, "email": mailbox.email}
    if mailbox.kind != MailboxKind.IMAP:
        return values
    try:
        stored = decrypt_json(mailbox.credentials_encrypted)
    except CredentialsError as exc:  # the key changed: the user types everything again
        log.warning("imap_form_prefill_failed mailbox_id=%s error=%s", mailbox.id, exc)
        stored = {}
    for prefix in ("imap", "smtp"):
        server = stored.get(prefix) or {}
        for name in ("host", "port", "security", "username"):
            if server.get(name) not in (None, ""):
                values[f"{prefix}_{name}"] = str(server[name])
    return values


def _values() -> dict[str, str]:
    if request.method != "POST":
        mailbox_id = request.args.get("mailbox_id", type=int)
        return _stored_values(mailbox_id) if mailbox_id else dict(DEFAULTS)
    return {k: form_str(k) for k in request.form if "password" not in k and k != "csrf_token"}


def _page(errors: FormErrors, status: int = 200) -> ResponseReturnValue:
    return render_template("app/imap.html", values=_values(), errors=errors), status


def _default_port(prefix: str, security: str) -> str:
    return DEFAULT_PORTS.get((prefix, security), "0")


def _server(prefix: str, email: str) -> dict[str, object]:
    security = form_str(f"{prefix}_security") or DEFAULTS[f"{prefix}_security"]
    password = request.form.get(f"{prefix}_password") or ""
    username = form_str(f"{prefix}_username")
    if prefix == "smtp":
        # Most providers use one login for both: empty SMTP fields mean "same as IMAP".
        password = password or request.form.get("imap_password") or ""
        username = username or form_str("imap_username")
    return {
        "host": form_str(f"{prefix}_host"),
        # An empty port is the usual one for the chosen security, not an error.
        "port": form_str(f"{prefix}_port") or _default_port(prefix, security),
        "username": username or email,
        "password": password,
        "security": security,
    }


def _done_url(message: str) -> str:
    """The mailboxes page (it shows `message`), or compose when that page is not installed."""
    try:
        return url_for("mailboxes.page", message=message)
    except BuildError:
        flash(message, "ok")
        return url_for("compose.compose")


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
        for location, message in labelled_messages(exc, LABELS).items():
            errors.add(location.replace(".", "_"), message)
    if body is None or errors:
        return _page(errors, 422)
    try:
        mailbox = connect_imap(
            db(),
            team_id=team_id(),
            user_id=user().id,
            email=body.email,
            credentials=body.credentials(),
            verify=body.verify,
        )
    except ConnectError as exc:
        if exc.code in ("mailbox_unreachable", "address_not_allowed"):
            server = "smtp" if "smtp" in (exc.fields or {}) else "imap"
            if exc.code == "address_not_allowed":
                hint = "(use the mail server's public name or address)"
            elif exc.try_later:  # its trouble, not the password: saying so spares a retype
                hint = "(the server had a temporary problem: try again in a few minutes)"
            else:
                hint = "(check the server, port, security, user name and password)"
            errors.add(f"{server}_host", f"{server.upper()}: {exc.message} {hint}.")
            return _page(errors, 422)
        errors.add("email", f"Email address: {exc.message}.")
        return _page(errors, CONNECT_STATUS[exc.code])
    return redirect(_done_url(f"{mailbox.email} is connected."))
