"""The API's blueprint and what every resource shares: errors, body and query parsing, tokens.

Every error is JSON `{"error": {"code", "message", "fields"}}` with a 4xx status
that says whose fault it is; a validation error names the offending field
(`steps.1.subject`). Resources of another team answer 404, exactly like ids that
do not exist, so ids cannot be probed across teams.

The resources register their routes on `bp` (web/api/routes.py, salesforce.py,
openapi.py); `web.api.init_app` registers the blueprint once they have.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ValidationError
from sqlalchemy import Select, select
from werkzeug.exceptions import HTTPException

from core.models import ApiToken, User, utcnow
from core.tokens import hash_api_token
from web.db import db
from web.validation import field_messages
from worker.sync.connecting import ConnectError

API_PREFIX = "/api/v1"
bp = Blueprint("api", __name__, url_prefix=API_PREFIX)
log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., ResponseReturnValue])


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, fields: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


def error_response(
    status: int, code: str, message: str, fields: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    response = jsonify({"error": body})
    response.status_code = status
    return response


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.fields)


# What each refusal of worker.sync.connecting is over HTTP (the pages show it with this status).
CONNECT_STATUS = {
    "not_found": 404,
    "wrong_account": 409,
    "conflict": 409,
    "mailbox_unreachable": 422,
    "address_not_allowed": 422,
}


@bp.errorhandler(ConnectError)
def connect_error_response(exc: ConnectError) -> Response:
    return error_response(CONNECT_STATUS[exc.code], exc.code, exc.message, exc.fields)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(status, code, exc.description or exc.name or "error")


def unrouted_json(exc: HTTPException) -> Response:
    """A path or method under /api/ that matches no route is a JSON error too.

    Routing fails before any blueprint is chosen, so the handler above never sees
    these: `web.layout`'s app-wide error pages hand the API's paths to this.
    """
    response = _http_error(exc)
    allow = exc.get_response().headers.get("Allow")
    if allow:  # a 405 says which methods would do
        response.headers["Allow"] = allow
    return response


def _nul_field(value: Any, at: str = "") -> str | None:
    """The dotted name of the first string (or key) in `value` holding a NUL, else None."""
    if isinstance(value, str):
        return (at or "(body)") if "\x00" in value else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        name = f"{at}.{key}" if at else str(key)
        if isinstance(key, str) and "\x00" in key:
            return name
        found = _nul_field(item, name)
        if found is not None:
            return found
    return None


def parse_body(model: type[M]) -> M:
    """The request's JSON body validated (strictly) as `model`, or a 400/415/422 ApiError."""
    if not request.is_json:
        raise ApiError(
            415, "unsupported_media_type", "send a JSON body with Content-Type: application/json"
        )
    payload = request.get_json(silent=True)
    if payload is None:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON")
    if not isinstance(payload, dict):
        raise ApiError(
            422,
            "invalid_request",
            "the request body must be a JSON object",
            {"(body)": "expected an object"},
        )
    nul = _nul_field(payload)
    if nul is not None:
        # PostgreSQL cannot store it in a text column; no real value holds one.
        message = "must not contain a NUL character (\\u0000)"
        raise ApiError(422, "invalid_request", f"{nul}: {message}", {nul: message})
    try:
        # Strict, as JSON: `0` is not false and `"1"` is not 1 (the schema says so); an
        # ISO 8601 string is still a date-time, JSON having no other way to write one.
        return model.model_validate_json(request.get_data(), strict=True)
    except ValidationError as exc:
        fields = field_messages(exc)
        summary = "; ".join(f"{name}: {message}" for name, message in fields.items())
        raise ApiError(422, "invalid_request", summary, fields) from None


def parse_query(model: type[M]) -> M:
    """The query string validated as `model` (values are text: "5" is read as 5), or a 422.

    A parameter given twice is refused rather than one of its values picked.
    """
    fields: dict[str, str] = {}
    values: dict[str, str] = {}
    for name, given in request.args.lists():
        if len(given) > 1:
            fields[name[:100]] = "given more than once"
        values[name] = given[-1]
    if not fields:
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            fields = field_messages(exc)
    summary = "; ".join(f"{name}: {message}" for name, message in fields.items())
    raise ApiError(422, "invalid_request", summary, fields)


def int_arg(
    name: str,
    *,
    required: bool = False,
    default: int | None = None,
    minimum: int = 1,
    maximum: int = 2**31 - 1,
) -> int | None:
    raw = request.args.get(name)
    # `?after_id=` names the parameter without a number: refused below, like any
    # other value that is not one (the schema says integer), never read as absent.
    if raw is None:
        if required:
            raise ApiError(
                422, "invalid_request", f"{name}: query parameter is required", {name: "required"}
            )
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            422,
            "invalid_request",
            f"{name}: expected a whole number",
            {name: "expected a whole number"},
        ) from None
    if not minimum <= value <= maximum:
        raise ApiError(
            422,
            "invalid_request",
            f"{name}: must be between {minimum} and {maximum}",
            {name: f"must be between {minimum} and {maximum}"},
        )
    return value


def authenticate() -> User:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <API token>")
    row = db().scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_api_token(token.strip()), ApiToken.revoked_at.is_(None)
        )
    )
    # A removed user's tokens are revoked with them (worker.members); checked here too, so
    # that one made for them afterwards (tokens create) opens nothing either.
    if row is None or row.user.removed_at is not None:
        raise ApiError(401, "unauthorized", "unknown or revoked API token")
    now = utcnow()
    # Touch at most once a minute: a busy client must not write on every call.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
        db().commit()
    return row.user


def require_token(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        try:
            g.user = authenticate()
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="sightline"'
            return response
        g.team_id = g.user.team_id
        return view(*args, **kwargs)

    wrapper.requires_token = True  # type: ignore[attr-defined]  # web.api.operations reads it
    return wrapper  # type: ignore[return-value]


# Lists page by id (`?after_id=&limit=`): oldest first, the answer's `next_after_id`
# is the last id of a full page, or null on the last one.
PAGE_DEFAULT = 100
PAGE_MAX = 500


def id_page(
    query: Select[Any], id_column: Any, after_id: int, limit: int
) -> tuple[list[Any], int | None]:
    """One page of `query`'s rows with ids after `after_id`, in id order, and the
    `next_after_id` to answer (None on the last page).

    One row more than the page is read to know whether another page follows, so
    the last page never hands out an id that leads to an empty one.
    """
    found = db().scalars(query.where(id_column > after_id).order_by(id_column).limit(limit + 1))
    rows = list(found)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)
