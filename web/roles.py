"""Who may do what in a team, and the one guard every admin-only page and API operation wears.

Two roles (`core.models.Role`):

    member  their own mailboxes, sequences, templates, prospects, emails, documents
    admin   all of that, plus what concerns the whole team: its people (members
            and invitations), its settings and tracking host, its Salesforce
            connection, its opt-out list (a compliance record), failed work

`admin_required` goes *under* the decorator that authenticates (pages:
`web.auth.login_required`; the API: `require_token` or the operation
decorator), so it reads the user that one found::

    @bp.get("/team/members")
    @login_required
    @admin_required
    def members() -> ResponseReturnValue: ...

It answers a member with a 403 that names the team's admins, so they know whom
to ask: the site's error page on pages, and under /api/v1
`{"error": {"code": "admin_only", "message": ..., "fields": {"admins": ...}}}`.
Placed above the authenticating decorator by mistake, it still refuses: with
nobody signed in it answers as that decorator would (401 JSON, or the sign-in
page), never with the view. The wrapped view carries `admin_only = True` so the
OpenAPI document can say which operations are admins'.

Must never: let a removed user or a member through, or name another team's admins.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from core.models import Role, User
from web.api.common import API_PREFIX, error_response
from web.auth import current_user
from web.db import db
from web.redirects import is_safe_redirect_path, path_of

ADMIN_ONLY = "admin_only"
# The 403 an admin-only API operation documents (web.api.operations `errors=`).
ADMIN_ONLY_ERROR = "Admins only: the token's user is a member (`admin_only`, naming the admins)"

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])


def team_admins(team_id: int) -> list[User]:
    """The team's admins who are still in it, by name then email."""
    query = (
        select(User)
        .where(User.team_id == team_id, User.role == Role.ADMIN, User.removed_at.is_(None))
        .order_by(User.name, User.email)
    )
    return list(db().scalars(query))


def admin_label(user: User) -> str:
    """ "Ann Admin <ann@acme.example>", or the email alone when they gave no name."""
    return f"{user.name} <{user.email}>" if user.name else user.email


def admins_sentence(team_id: int) -> str:
    """Whom a member should ask, in words: "Ask an admin of your team: Ann <ann@…>."."""
    admins = [admin_label(admin) for admin in team_admins(team_id)]
    if not admins:
        return "Your team has no admin: ask the person who runs Sightline for you."
    return f"Ask an admin of your team: {', '.join(admins)}."


def _is_api_request() -> bool:
    return request.path == API_PREFIX or request.path.startswith(f"{API_PREFIX}/")


def _not_signed_in() -> ResponseReturnValue:
    if _is_api_request():
        response = error_response(401, "unauthorized", "send Authorization: Bearer <API token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="sightline"'
        return response
    here = path_of(request.path, request.query_string)
    return redirect(url_for("auth.signin", next=here if is_safe_redirect_path(here) else None))


def refuse_member(user: User) -> ResponseReturnValue:
    """The 403 a member gets for an admin's page or operation, naming the admins."""
    admins = team_admins(user.team_id)
    if _is_api_request():
        message = f"only an admin of your team may do this. {admins_sentence(user.team_id)}"
        labels = ", ".join(admin_label(admin) for admin in admins) or "(none)"
        return error_response(403, ADMIN_ONLY, message, {"admins": labels})
    page = render_template(
        "error.html",
        status=403,
        title="Admins only",
        advice="This page is for your team's admins. "
        "Ask one of them to do this for you, or to make you an admin.",
        admins=admins,
    )
    return page, 403


def admin_required(view: F) -> F:
    """Let only an admin of the team through; anyone else gets `refuse_member`'s 403."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        user = current_user()
        if user is None:
            return _not_signed_in()
        if not user.is_admin:
            return refuse_member(user)
        return view(*args, **kwargs)

    wrapper.admin_only = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
