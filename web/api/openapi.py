"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document, generated from the routes.

`web.api.operations.build_document` walks the app's URL map and describes each
route from what its `@operation` recorded (schemas from its pydantic models),
so the document cannot drift from what the API does. The document is also the
list of query parameters each operation accepts: any other is refused with a
422 (`_refuse_unknown_query_parameters`).
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from web.api.common import API_PREFIX, bp, error_response
from web.api.operations import Answer, build_document, openapi_path, operation

_DOCUMENT = "sightline.openapi"
_QUERIES = "sightline.openapi.queries"


def app_document(app: Flask) -> dict[str, Any]:
    """`build_document(app)`, built once per app: its routes are fixed once it serves."""
    found = app.extensions.get(_DOCUMENT)
    if found is None:
        found = app.extensions[_DOCUMENT] = build_document(app)
    return cast(dict[str, Any], found)


@operation(
    "GET",
    "/openapi.json",
    summary="This document",
    answers=[Answer(200, None, "The OpenAPI 3.1 document", schema={"type": "object"})],
    public=True,
)
def openapi_document() -> ResponseReturnValue:
    return jsonify(app_document(current_app._get_current_object()))  # type: ignore[attr-defined]


def _documented_queries(app: Flask) -> dict[tuple[str, str], frozenset[str]]:
    """(OpenAPI path, method) → the query parameters that operation documents.

    Only operations that require a token: public ones (the OAuth callbacks) are
    called by third parties who add parameters of their own.
    """
    found = app.extensions.get(_QUERIES)
    if found is None:
        found = {}
        for path, operations in app_document(app)["paths"].items():
            for method, op in operations.items():
                if not isinstance(op, dict) or op.get("security") == []:
                    continue
                names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
                found[(path, method.upper())] = frozenset(names)
        app.extensions[_QUERIES] = found
    return cast(dict[tuple[str, str], frozenset[str]], found)


@bp.before_app_request
def _refuse_unknown_query_parameters() -> ResponseReturnValue | None:
    """A query parameter the operation does not document is an error, as an unknown
    body field is: `?enrolment_id=4` must not quietly list every message."""
    rule = request.url_rule
    if rule is None or not rule.rule.startswith(f"{API_PREFIX}/"):
        return None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    allowed = _documented_queries(app).get((openapi_path(rule.rule), request.method))
    if allowed is None:
        return None
    unknown = sorted(set(request.args) - allowed)
    if not unknown:
        return None
    fields = {name[:100]: "unknown query parameter" for name in unknown}
    return error_response(
        422, "invalid_request", f"{unknown[0][:100]}: unknown query parameter", fields
    )
