"""The OpenAPI document is generated from the routes: every API route is in it, and only those.

`missing_from_document` compares the app's URL map (every rule under /api/v1,
every method but HEAD and OPTIONS) with the paths and methods the served
document lists, both ways. A route registered without `@operation` is caught:
the last test adds one to a fresh app and sees the comparison fail.

None of this touches a database or Redis: one app per module, built with
settings that name them.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from flask import Flask

from config import get_settings
from tests.conftest import service_environment
from web import create_app
from web.api.operations import build_document, undocumented

pytestmark = pytest.mark.integration


def _fresh_app() -> Flask:
    with tempfile.TemporaryDirectory() as var:
        database = f"sqlite:///{Path(var) / 'unused.db'}"
        names = service_environment(database, "redis://127.0.0.1:6379/15", Path(var))
        with mock.patch.dict(os.environ, names):
            get_settings.cache_clear()
            app = create_app({"TESTING": True})
    get_settings.cache_clear()
    return app


@pytest.fixture(scope="module")
def app() -> Iterator[Flask]:
    yield _fresh_app()


def served_operations(app: Flask) -> set[tuple[str, str]]:
    """(method, OpenAPI path) for each route the URL map serves under /api/v1."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
                found.add((method, path))
    return found


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }


def missing_from_document(app: Flask, document: dict[str, Any]) -> list[str]:
    """What one side has and the other lacks, in words (empty: they agree)."""
    served, documented = served_operations(app), documented_operations(document)
    return [f"served, not documented: {m} {p}" for m, p in sorted(served - documented)] + [
        f"documented, not served: {m} {p}" for m, p in sorted(documented - served)
    ]


def test_every_api_route_and_method_is_in_the_served_document_and_only_those(app: Flask) -> None:
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    assert missing_from_document(app, document) == []
    assert undocumented(app) == []
    # Sanity: the comparison saw the API, not an empty map.
    assert ("PATCH", "/mailboxes/{mailbox_id}") in served_operations(app)
    assert len(served_operations(app)) > 40


def test_operations_carry_their_models_statuses_and_security(app: Flask) -> None:
    with app.app_context():
        document = build_document()
    paths = document["paths"]
    create = paths["/sequences"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SequenceCreate"
    }
    assert set(create["responses"]) >= {"201", "400", "401", "413", "415", "422"}
    assert "SequenceCreate" in document["components"]["schemas"]
    # Path parameters typed from the Flask converter, bounded like web.security's.
    (mailbox_id,) = paths["/mailboxes/{mailbox_id}"]["get"]["parameters"]
    assert mailbox_id["schema"] == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    # The OAuth callback is public and says so; everything else inherits the bearer token.
    assert paths["/salesforce/oauth/callback"]["get"]["security"] == []
    assert "security" not in paths["/mailboxes"]["get"]
    assert document["security"] == [{"bearer": []}]
    # A multipart upload is documented as one, with the size limit's 413.
    upload = paths["/documents"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert "413" in upload["responses"]


def test_a_route_registered_without_the_decorator_is_caught() -> None:
    app = _fresh_app()

    def bare() -> str:
        return "{}"

    app.add_url_rule("/api/v1/bare/<int:thing_id>", "bare", bare, methods=["GET", "POST"])
    with app.app_context():
        document = build_document()
    assert missing_from_document(app, document) == [
        "served, not documented: GET /bare/{thing_id}",
        "served, not documented: POST /bare/{thing_id}",
    ]
    assert undocumented(app) == [
        "GET /api/v1/bare/<int:thing_id>",
        "POST /api/v1/bare/<int:thing_id>",
    ]


def test_an_unknown_query_parameter_is_refused_from_the_generated_document(app: Flask) -> None:
    # Refused before the token is checked: the document, not the route, says what is allowed.
    response = app.test_client().get("/api/v1/events?enrolment_id=4")
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"enrolment_id": "unknown query parameter"}
