"""What the app's pages share: the signed-in team, ownership checks, pagination, forms.

Every query a page makes goes through `team_id()` or `owned()`: another team's
row answers 404, exactly like a row that does not exist, so ids cannot be
probed across teams. `secure_headers` is every app page's after-request hook
(CSP without inline scripts, no framing, no sniffing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

from flask import Blueprint, abort, request
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute
from werkzeug.wrappers import Response as BaseResponse

from core.models import Team, User
from web.auth import current_user, protect
from web.db import db

PAGE_SIZE = 50

# Scripts from this site only (no inline script anywhere in the app's pages). Inline
# *styles* are allowed because an email preview (a sandboxed srcdoc iframe, which
# inherits this policy) must look like the email, and emails style inline; images
# from anywhere for the same reason. Nothing may frame these pages.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https: http:; connect-src 'self'; frame-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def secure_headers(response: BaseResponse) -> BaseResponse:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def app_blueprint(name: str, import_name: str) -> Blueprint:
    """A blueprint of the app: CSRF on every state change, security headers on every answer."""
    blueprint = Blueprint(name, import_name)
    protect(blueprint)
    blueprint.after_request(secure_headers)
    return blueprint


def user() -> User:
    found = current_user()
    if found is None:  # login_required runs first; this is a programming error
        abort(401)
    return found


def team_id() -> int:
    return user().team_id


def team() -> Team:
    return db().get_one(Team, team_id())


class TeamOwned(Protocol):
    id: Any
    team_id: Any


T = TypeVar("T", bound=TeamOwned)


def owned(model: type[T], object_id: int) -> T:
    """The team's row, or 404 (also for another team's row)."""
    found = db().get(model, object_id)
    if found is None or found.team_id != team_id():
        abort(404)
    return found


# -- pagination ------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of a list, newest first, and the cursor for the next one.

    Keyset pagination (`before` an id) rather than offsets: a page costs the same
    at row 10 and row 10 million, and rows arriving meanwhile do not shift it.
    """

    items: list[Any]
    next_before: int | None
    first_page: bool

    def next_url(self, **args: Any) -> str | None:
        if self.next_before is None:
            return None
        return _with_args(before=self.next_before, **args)

    def first_url(self, **args: Any) -> str | None:
        return None if self.first_page else _with_args(before=None, **args)


def _with_args(**changes: Any) -> str:
    args = {k: v for k, v in request.args.items(multi=False)}
    for key, value in changes.items():
        if value is None or value == "":
            args.pop(key, None)
        else:
            args[key] = str(value)
    query = urlencode(args)
    return request.path + (f"?{query}" if query else "")


def before_arg() -> int | None:
    raw = request.args.get("before", "")
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        abort(400, description="before: expected a whole number")
    if value < 1:
        abort(400, description="before: must be at least 1")
    return value


def keyset_page(
    query: Select[*tuple[Any, ...]],
    id_column: InstrumentedAttribute[int],
    *,
    size: int = PAGE_SIZE,
    scalars: bool = True,
    key: Callable[[Any], int] | None = None,
) -> Page:
    """Run `query` newest first (by `id_column`), one page after `?before=`."""
    before = before_arg()
    if before is not None:
        query = query.where(id_column < before)
    query = query.order_by(id_column.desc()).limit(size + 1)
    rows: Sequence[Any] = db().scalars(query).all() if scalars else db().execute(query).all()
    items = list(rows[:size])
    more = len(rows) > size
    last_id = (key(items[-1]) if key else items[-1].id) if items else None
    return Page(items=items, next_before=last_id if more else None, first_page=before is None)


# -- forms -----------------------------------------------------------------------------


@dataclass
class FormErrors:
    """Field name → message, in the order found; `first` is where focus goes."""

    messages: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.messages.setdefault(name, message)

    def get(self, name: str) -> str | None:
        return self.messages.get(name)

    @property
    def first(self) -> str | None:
        return next(iter(self.messages), None)

    def __bool__(self) -> bool:
        return bool(self.messages)

    def items(self) -> list[tuple[str, str]]:
        return list(self.messages.items())


def form_str(name: str, *, limit: int | None = None) -> str:
    value = (request.form.get(name) or "").strip()
    return value[:limit] if limit else value


def parse_local_datetime(value: str, offset_minutes: str) -> datetime:
    """A `datetime-local` value in the browser's zone (JavaScript's getTimezoneOffset) to UTC.

    Raises:
        ValueError: not a date and time, or an offset outside ±14 hours.
    """
    local = datetime.fromisoformat(value)
    if local.tzinfo is not None:
        return local.astimezone(UTC)
    offset = int(offset_minutes or "0")
    if not -14 * 60 <= offset <= 14 * 60:
        raise ValueError("time zone offset out of range")
    # getTimezoneOffset is UTC minus local time, in minutes.
    return (local + timedelta(minutes=offset)).replace(tzinfo=UTC)


def percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "\u2014"
    return f"{math.floor(100 * part / whole + 0.5)} %"
