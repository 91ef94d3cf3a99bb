"""Signing in to the web app: sessions, the device cookie, CSRF protection.

Owns `/signin` and `/signout`, `current_user()`, the `login_required`
decorator, and `protect(blueprint)`, which makes every non-GET request of a
session-authenticated blueprint carry the session's CSRF token (a hidden
`csrf_token` field or an `X-CSRF-Token` header). The API (bearer tokens) and
webhooks are not session-authenticated and are not protected this way.

Signing in also marks the browser as one of the team's own devices: a row in
`devices`, a long-lived signed cookie (`sl_device`) on this host, and a row in
`sign_ins` with the address and user agent. Tracking hits that carry the cookie,
or come from a recent sign-in's address, are labelled `self` and never counted.

Failed sign-ins are limited per email and address, per address and per email
(`web.signin_limit`): past the limit `/signin` answers 429 with Retry-After.

Must never: store or log a password, say whether an email has an account
(one message for every failed sign-in), or accept a state-changing request
without the session's CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

from flask import (
    Blueprint,
    Flask,
    abort,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from werkzeug.security import check_password_hash
from werkzeug.wrappers import Response as BaseResponse

from config import get_settings
from core.models import Device, SignIn, User, utcnow
from core.tracking.classify import client_ip
from core.tracking.tokens import DEVICE_COOKIE, device_cookie, read_device_cookie
from web import signin_limit
from web.db import db
from web.redirects import is_safe_redirect_path, path_of, safe_redirect_path

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])

SESSION_LIFETIME = timedelta(days=14)
DEVICE_COOKIE_MAX_AGE = 400 * 24 * 3600  # the longest browsers keep a cookie
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Checked against when the email is unknown, so a miss costs as much as a wrong password.
_DUMMY_HASH = "scrypt:32768:8:1$sightline$" + "0" * 128


def csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def check_csrf() -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(expected, str) or not hmac.compare_digest(expected, given):
        log.warning("csrf_rejected path=%s", request.path)
        abort(400, description="The form expired or came from another site. Reload and try again.")


def protect(blueprint: Blueprint) -> None:
    """Require the session's CSRF token on every state-changing request of `blueprint`."""
    blueprint.before_request(check_csrf)


protect(bp)


def current_user() -> User | None:
    if "user" in g:
        cached: User | None = g.user
        return cached
    user = None
    user_id = session.get("user_id")
    if isinstance(user_id, int):
        found = db().get(User, user_id)
        # A removed user's session ends with their membership (web.members).
        # A new password (page, API or CLI) ends the user's other sessions: each
        # carries a mark of the password it was opened with.
        if (
            found is not None
            and found.team_id == session.get("team_id")
            and not found.removed_at
            and hmac.compare_digest(str(session.get("pw", "")), password_mark(found))
        ):
            user = found
    g.user = user
    return user


def login_required(view: F) -> F:
    """For pages: a visitor who is not signed in is sent to the sign-in page."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if current_user() is None:
            here = path_of(request.path, request.query_string)
            back = here if is_safe_redirect_path(here) else None
            return redirect(url_for("auth.signin", next=back))
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def login_required_json(view: F) -> F:
    """For JSON endpoints: a visitor who is not signed in gets a JSON 401."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        if current_user() is None:
            response = jsonify({"error": {"code": "unauthorized", "message": "sign in first"}})
            response.status_code = 401
            return response
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _cookie_flags() -> dict[str, Any]:
    secure = get_settings().public_base_url.startswith("https://")
    # An image in a webmail page is a cross-site request: only SameSite=None (which
    # requires Secure) lets the cookie ride along. Over plain http, Lax is the most
    # a browser accepts; the sign-in address rule covers the rest (README).
    return {"secure": secure, "httponly": True, "samesite": "None" if secure else "Lax"}


def _remember_device(user: User, response: BaseResponse) -> Device:
    """The browser's device row, reused when it already carries our cookie."""
    now = utcnow()
    device = None
    ref = read_device_cookie(request.cookies.get(DEVICE_COOKIE, ""))
    if ref is not None and ref.team_id == user.team_id:
        device = db().scalar(
            select(Device).where(Device.public_id == ref.device_id, Device.revoked_at.is_(None))
        )
    if device is None:
        device = Device(
            public_id=secrets.token_hex(16),
            team_id=user.team_id,
            user_id=user.id,
            user_agent=(request.user_agent.string or "")[:500] or None,
            created_at=now,
            last_seen_at=now,
        )
        db().add(device)
        db().flush()
    else:
        device.last_seen_at = now
    response.set_cookie(
        DEVICE_COOKIE,
        device_cookie(device.public_id, user.team_id, user.id),
        max_age=DEVICE_COOKIE_MAX_AGE,
        path="/",
        **_cookie_flags(),
    )
    return device


def request_ip() -> str | None:
    return client_ip(
        request.remote_addr,
        request.headers.get("X-Forwarded-For"),
        get_settings().forwarded_allow_ips,
    )


NEXT_REFUSED = (
    "The link you followed asked to continue to an address outside Sightline, so it "
    "was not followed. Sign in here to go to your feed."
)


def _next_target() -> str:
    """Where to go after signing in: the request's ``next``, as given (checked by the caller)."""
    return request.args.get("next") or request.form.get("next") or ""


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> ResponseReturnValue:
    error = None
    email = ""
    if _next_target() and not is_safe_redirect_path(_next_target()):
        # Refused before any credential is looked at: a link made to send someone
        # elsewhere after signing in is answered 400, with a clean sign-in form.
        log.warning("signin_next_refused length=%s", len(_next_target()))
        page = render_template("signin.html", error=None, notice=NEXT_REFUSED, email="", next="")
        return page, 400
    if request.method == "POST":
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        if not email or not password:
            error = "Enter your email and password."
        elif (wait := signin_limit.retry_after(email, request_ip())) is not None:
            log.warning("signin_limited retry_after=%s", wait)
            return _too_many(email, wait)
        else:
            user = db().scalar(select(User).where(User.email == email))
            has_password = user is not None and bool(user.password_hash) and not user.removed_at
            stored = user.password_hash if user is not None and user.password_hash else _DUMMY_HASH
            # Always one hash check, so a wrong email answers as slowly as a wrong password.
            matches = check_password_hash(stored, password)
            if user is not None and has_password and matches:
                signin_limit.record_success(email, request_ip())
                return _sign_in(user)
            signin_limit.record_failure(email, request_ip())
            log.info("signin_failed")
            error = "That email and password do not match an account."
    status = 200 if error is None else 401
    return (
        render_template("signin.html", error=error, email=email, next=request.args.get("next", "")),
        status,
    )


def _too_many(email: str, wait: int) -> ResponseReturnValue:
    minutes = max(1, -(-wait // 60))
    error = (
        "Too many failed sign-ins. For your account's safety, signing in is paused here "
        f"for {minutes} minute{'s' if minutes != 1 else ''}; try again then."
    )
    page = render_template(
        "signin.html", error=error, email=email, next=request.args.get("next", "")
    )
    return page, 429, {"Retry-After": str(wait)}


def password_mark(user: User) -> str:
    """A short digest of the user's password hash, kept in their session cookie.

    The cookie is signed, not secret: this says which password opened the session
    and nothing about it (it digests a salted hash). Changing the password changes
    the mark, so every session opened with the old one ends at its next request.
    """
    return hashlib.sha256((user.password_hash or "").encode()).hexdigest()[:16]


def keep_session_after_password_change(user: User) -> None:
    """The session that changed the password stays signed in; the others end."""
    session["pw"] = password_mark(user)


def sign_in(user: User) -> BaseResponse:
    """Start a session for `user` (a password was just checked or chosen) and go on."""
    return _sign_in(user)


def _sign_in(user: User) -> BaseResponse:
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["team_id"] = user.team_id
    session["pw"] = password_mark(user)
    csrf_token()  # a fresh token for the new session
    response = redirect(safe_redirect_path(_next_target(), url_for("feed.page")))
    device = _remember_device(user, response)
    db().add(
        SignIn(
            team_id=user.team_id,
            user_id=user.id,
            device_id=device.id,
            ip=request_ip(),
            user_agent=(request.user_agent.string or "")[:500] or None,
            at=utcnow(),
        )
    )
    db().commit()
    log.info("signin user_id=%s team_id=%s device_id=%s", user.id, user.team_id, device.id)
    return response


@bp.post("/signout")
def signout() -> ResponseReturnValue:
    user_id = session.get("user_id")
    session.clear()
    log.info("signout user_id=%s", user_id)
    # The device cookie stays: this browser is still one of the team's own devices.
    return redirect(url_for("auth.signin"))


def init_app(app: Flask) -> None:
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", SESSION_LIFETIME)
    app.jinja_env.globals["csrf_token"] = csrf_token
    app.jinja_env.globals["current_user"] = current_user
    app.register_blueprint(bp)
