"""Who is calling an API operation the Outlook task pane uses: an add-in token or an API token.

`addin_or_api_token` is `web.api.common.require_token` that also accepts the
add-in's own bearer (``slo_…``, `web.addons.outlook.tokens`). Only operations
decorated with it accept add-in tokens; the rest of the API never does. It sets
``g.user`` and ``g.team_id`` like `require_token`, and ``g.addin_token`` (the
claims, or None for an API token) so the pane's sign-out can revoke its own.

Use it under `web.api.operations.operation` (which then adds no `require_token`)::

    @operation("GET", "/addons/panel", summary=..., response=...)
    @addin_or_api_token
    def addon_panel() -> ResponseReturnValue: ...
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import g, request
from flask.typing import ResponseReturnValue

from web.addons.outlook import tokens
from web.api.common import ApiError, authenticate, error_response
from web.db import db

F = TypeVar("F", bound=Callable[..., ResponseReturnValue])

EXPIRED = "the add-in's sign-in expired or was signed out: sign in again"


def _bearer() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def addin_or_api_token(view: F) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> ResponseReturnValue:
        token = _bearer()
        try:
            if tokens.looks_like(token):
                user = tokens.verify(db(), token)
                if user is None:
                    raise ApiError(401, "unauthorized", EXPIRED)
                g.addin_token = tokens.read(token)
            else:
                user = authenticate()
                g.addin_token = None
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="sightline"'
            return response
        g.user = user
        g.team_id = user.team_id
        return view(*args, **kwargs)

    # web.api.operations wraps a view in require_token unless it checks the bearer itself.
    wrapper.requires_token = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
