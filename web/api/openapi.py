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
from web.api.openapi_parts import error_responses
from web.api.operations import Answer, openapi_path, operation
from web.api.operations import build_document as generated_document
from web.api.optouts import extend_document as opt_out_routes
from web.api.privacy import extend_document as privacy_routes
from web.api.salesforce import extend_document
from web.api.tracking_host import extend_document as tracking_host_routes
from web.connect.api import extend_document as connect_routes
from web.documents.schemas import extend_document as document_routes

_DOCUMENT = "sightline.openapi"
_QUERIES = "sightline.openapi.queries"


def build_document(app: Flask | None = None) -> dict[str, Any]:
    """The document `app` (default: the current app) serves."""
    document = generated_document(app)
    # Modules not converted to `web.api.operations` yet still add their paths by hand.
    document = privacy_routes(document_routes(connect_routes(extend_document(document))))
    return _with_body_limit(tracking_host_routes(opt_out_routes(document)))


def _with_body_limit(document: dict[str, Any]) -> dict[str, Any]:
    """Every operation that takes a body may answer 413: the app refuses one over its limit
    (10 MB; a document upload's own limit for uploads) before the route reads it."""
    too_large = error_responses({413: "Body over the size limit"}, 413)
    for operations in document["paths"].values():
        for op in operations.values():
            if isinstance(op, dict) and "requestBody" in op:
                for status, answer in too_large.items():
                    op["responses"].setdefault(status, answer)
    return document


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
