"""`GET /api/v1/openapi.json`: the OpenAPI 3.1 document, built from the pydantic models.

The schemas are the models the routes validate and serialise with, so the
document cannot drift from what the API does. The document is also the list of
query parameters each operation accepts: any other is refused with a 422
(`_refuse_unknown_query_parameters`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from flask import jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from web.api.common import API_PREFIX, bp, error_response
from web.api.openapi_parts import add_schemas, error_responses, json_content
from web.api.optouts import extend_document as opt_out_routes
from web.api.privacy import extend_document as privacy_routes
from web.api.salesforce import extend_document
from web.api.schemas import (
    EnrollmentCreate,
    EnrollmentOut,
    ErrorOut,
    EventList,
    MailboxCreate,
    MailboxList,
    MailboxOut,
    MailboxPacing,
    MessageList,
    QuarantineList,
    SequenceCreate,
    SequenceOut,
)
from web.api.tracking_host import extend_document as tracking_host_routes
from web.connect.api import extend_document as connect_routes
from web.documents.schemas import extend_document as document_routes

_MODELS: list[type[BaseModel]] = [
    MailboxCreate,
    MailboxPacing,
    MailboxOut,
    MailboxList,
    QuarantineList,
    SequenceCreate,
    SequenceOut,
    EnrollmentCreate,
    EnrollmentOut,
    MessageList,
    EventList,
    ErrorOut,
]
_ERRORS = {
    400: "Body is not valid JSON",
    401: "Missing or unknown API token",
    404: "Not found (or not your team's)",
    409: "Conflicts with existing state",
    415: "Body is not JSON",
    422: "Invalid field (named in error.fields)",
}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return json_content(model.__name__)


def _errors(*statuses: int) -> dict[str, Any]:
    return error_responses(_ERRORS, *statuses)


def _id_param(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    }


def _query_param(name: str, required: bool, minimum: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": {"type": "integer", "minimum": minimum, "maximum": 2**31 - 1},
    }


def _create(
    summary: str, body: type[BaseModel], out: type[BaseModel], *extra: int
) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": _json(body)},
            "responses": {
                "201": {"description": "Created", "content": _json(out)},
                **_errors(400, 401, 415, 422, *extra),
            },
        }
    }


def _get(
    summary: str, out: type[BaseModel], params: list[dict[str, Any]], *extra: int
) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": _json(out)}, **_errors(401, *extra)},
    }


def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    add_schemas(
        {"components": {"schemas": schemas}},
        _MODELS,
        lambda model: "serialization" if model.__name__.endswith(("Out", "List")) else "validation",
    )
    mailboxes = _create("Connect a mailbox", MailboxCreate, MailboxOut, 409)
    mailboxes["get"] = _get("List the team's mailboxes", MailboxList, [])
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Sightline API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/mailboxes": mailboxes,
            "/mailboxes/{mailbox_id}": {
                "get": _get("A mailbox", MailboxOut, [_id_param("mailbox_id")], 404),
                "patch": {
                    "summary": "Set a mailbox's pacing and skipped folders, or resume its sends",
                    "parameters": [_id_param("mailbox_id")],
                    "requestBody": {"required": True, "content": _json(MailboxPacing)},
                    "responses": {
                        "200": {"description": "OK", "content": _json(MailboxOut)},
                        **_errors(400, 401, 404, 415, 422),
                    },
                },
            },
            "/mailboxes/{mailbox_id}/quarantine": {
                "get": _get(
                    "Messages the sync keeps but could not read, newest first",
                    QuarantineList,
                    [_id_param("mailbox_id")],
                    404,
                )
            },
            "/sequences": _create("Create a sequence", SequenceCreate, SequenceOut),
            "/sequences/{sequence_id}": {
                "get": _get("A sequence", SequenceOut, [_id_param("sequence_id")], 404)
            },
            "/enrollments": _create("Enroll a prospect", EnrollmentCreate, EnrollmentOut, 409),
            "/enrollments/{enrollment_id}": {
                "get": _get(
                    "An enrollment with its state history",
                    EnrollmentOut,
                    [_id_param("enrollment_id")],
                    404,
                )
            },
            "/messages": {
                "get": _get(
                    "Messages sent to an enrollment",
                    MessageList,
                    [_query_param("enrollment_id", True)],
                    404,
                    422,
                )
            },
            "/events": {
                "get": _get(
                    "An enrollment's events, oldest first",
                    EventList,
                    [
                        _query_param("enrollment_id", True),
                        _query_param("after_id", False, minimum=0),
                        {
                            **_query_param("limit", False),
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                    ],
                    404,
                    422,
                )
            },
        },
    }
    # Salesforce routes document themselves (web/api/salesforce.py).
    # Mailbox connect routes likewise (web/connect/api.py), and the content library's
    # (web/documents/schemas.py), and erasure and do-not-track (web/api/privacy.py).
    # The opt-out list and the team's settings (web/api/optouts.py), its tracking host
    # (web/api/tracking_host.py).
    document = privacy_routes(document_routes(connect_routes(extend_document(document))))
    return _with_body_limit(tracking_host_routes(opt_out_routes(document)))


def _with_body_limit(document: dict[str, Any]) -> dict[str, Any]:
    """Every operation that takes a body may answer 413: the app refuses one over its limit
    (10 MB; a document upload's own limit for uploads) before the route reads it."""
    too_large = error_responses({413: "Body over the size limit"}, 413)
    for operations in document["paths"].values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                for status, answer in too_large.items():
                    operation["responses"].setdefault(status, answer)
    return document


@bp.get("/openapi.json")
def openapi_document() -> ResponseReturnValue:
    return jsonify(build_document())


@lru_cache(maxsize=1)
def _documented_queries() -> dict[tuple[str, str], frozenset[str]]:
    """(OpenAPI path, method) → the query parameters that operation documents.

    Only operations that require a token: public ones (the OAuth callbacks) are
    called by third parties who add parameters of their own.
    """
    found: dict[tuple[str, str], frozenset[str]] = {}
    for path, operations in build_document()["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or operation.get("security") == []:
                continue
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            found[(path, method.upper())] = frozenset(names)
    return found


@bp.before_app_request
def _refuse_unknown_query_parameters() -> ResponseReturnValue | None:
    """A query parameter the operation does not document is an error, as an unknown
    body field is: `?enrolment_id=4` must not quietly list every message."""
    rule = request.url_rule
    if rule is None or not rule.rule.startswith(f"{API_PREFIX}/"):
        return None
    path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule.removeprefix(API_PREFIX))
    allowed = _documented_queries().get((path, request.method))
    if allowed is None:
        return None
    unknown = sorted(set(request.args) - allowed)
    if not unknown:
        return None
    fields = {name[:100]: "unknown query parameter" for name in unknown}
    return error_response(
        422, "invalid_request", f"{unknown[0][:100]}: unknown query parameter", fields
    )
