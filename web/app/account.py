"""The Account page, ``/account``: what every signed-in person manages for themselves.

    GET  /account                              name, signature, password, devices, tokens
    POST /account                              name and signature (resumes what waited)
    POST /account/password                     current password, then the new one twice
    POST /account/devices/<id>/forget          this browser no longer counts as yours
    POST /account/tokens                       a named API token, shown on the answer once
    POST /account/tokens/<id>/revoke           the API refuses it from then on

Each form is its own POST, so an error in one keeps what was typed in it (422,
the same page, the field named) and never touches the others. A new token is
shown in the page that answers its POST and nowhere else: it is never put in
the session or a redirect, so reloading cannot show it again. The rules are
`web.app.profile`'s, which the API (`web.api.account`) calls too.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from core.templates import clean_signature, signature_text
from web.app import profile
from web.app.common import FormErrors, app_blueprint, user
from web.auth import keep_session_after_password_change, login_required, request_ip
from web.db import db

bp = app_blueprint("account", __name__)

LABELS = {
    "name": "Name",
    "signature": "Signature",
    "current_password": "Current password",
    "new_password": "New password",
    "confirm_password": "New password again",
    "token_name": "Token name",
}


def _errors(exc: profile.InvalidError, *, prefix: str = "") -> FormErrors:
    errors = FormErrors()
    for name, message in exc.fields.items():
        field = prefix + name
        errors.add(field, f"{LABELS.get(field, field)}: {message}.")
    return errors


def editable_signature(stored: str | None) -> str:
    """The signature as its owner would type it: plain text when that is all it is."""
    if not stored:
        return ""
    text = signature_text(stored)
    return text if clean_signature(text) == stored else stored


def account_page(
    *, errors: FormErrors | None = None, values: dict[str, Any] | None = None, **extra: Any
) -> str:
    me = user()
    shown = {"name": me.name or "", "signature": editable_signature(me.signature), **(values or {})}
    return render_template(
        "app/account.html",
        me=me,
        errors=errors or FormErrors(),
        values=shown,
        devices=profile.devices(db(), me),
        tokens=profile.tokens(db(), me),
        **extra,
    )


@bp.get("/account")
@login_required
def index() -> ResponseReturnValue:
    return account_page()


@bp.post("/account")
@login_required
def save() -> ResponseReturnValue:
    name = request.form.get("name", "")
    signature = request.form.get("signature", "")
    try:
        saved = profile.save_profile(db(), user(), name=name, signature=signature)
    except profile.InvalidError as exc:
        db().rollback()
        values = {"name": name, "signature": signature}
        return account_page(errors=_errors(exc), values=values), 422
    db().commit()
    resumed = ""
    if saved.resumed:
        plural = "enrolment" if saved.resumed == 1 else "enrolments"
        resumed = f" {saved.resumed} paused {plural} that needed it went on."
    flash(f"Saved.{resumed}", "ok")
    return redirect(url_for("account.index"))


@bp.post("/account/password")
@login_required
def password() -> ResponseReturnValue:
    try:
        profile.change_password(
            user(),
            request.form.get("current_password", ""),
            request.form.get("new_password", ""),
            request.form.get("confirm_password", ""),
            ip=request_ip(),
        )
    except profile.InvalidError as exc:
        db().rollback()
        return account_page(errors=_errors(exc)), 422
    except profile.TooManyAttemptsError as exc:
        db().rollback()
        limited = _errors(profile.InvalidError({"current_password": str(exc)}))
        return account_page(errors=limited), 429, {"Retry-After": str(exc.wait)}
    db().commit()
    keep_session_after_password_change(user())
    flash("Password changed; your other sessions are signed out.", "ok")
    return redirect(url_for("account.index"))


@bp.post("/account/devices/<int:device_id>/forget")
@login_required
def forget_device(device_id: int) -> ResponseReturnValue:
    try:
        profile.forget_device(db(), user(), device_id)
    except profile.NotYoursError:
        abort(404)
    db().commit()
    flash("Forgotten: opens from that browser now count as a reader's.", "ok")
    return redirect(url_for("account.index"))


@bp.post("/account/tokens")
@login_required
def create_token() -> ResponseReturnValue:
    name = request.form.get("token_name", "")
    try:
        token, row = profile.create_token(db(), user(), name)
    except profile.InvalidError as exc:
        db().rollback()
        return account_page(errors=_errors(exc, prefix="token_"), values={"token_name": name}), 422
    db().commit()
    # Shown here once, on this answer only: never stored, never in a redirect.
    return account_page(new_token=token, new_token_row=row), 201, {"Cache-Control": "no-store"}


@bp.post("/account/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int) -> ResponseReturnValue:
    try:
        row = profile.revoke_token(db(), user(), token_id)
    except profile.NotYoursError:
        abort(404)
    db().commit()
    flash(f"Revoked {row.name or row.prefix + '…'}: the API refuses it from now on.", "ok")
    return redirect(url_for("account.index"))
