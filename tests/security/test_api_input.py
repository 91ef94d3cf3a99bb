"""Bad input to API v1 gets a clear 4xx naming what is wrong, never a 500 or a silent guess.

Found by tests/integration/test_schemathesis.py and by hand: ids beyond what the
database can hold (a 500 from PostgreSQL), NUL characters (a 500 from
PostgreSQL), values of the wrong JSON type taken as something else (`0` as
false), misspelt query parameters ignored (`?enrolment_id=` listed everything),
and unknown paths under /api/ answered with an HTML page.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ApiClient

pytestmark = pytest.mark.integration

HUGE = 99_999_999_999


def step() -> dict[str, Any]:
    return {"delay_seconds": 0, "subject": "Hi", "body_html": "<p>Hi</p>"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/enrollments", {"sequence_id": HUGE, "email": "a@b.test"}, "sequence_id"),
        ("/api/v1/sequences", {"name": "x", "mailbox_id": HUGE, "steps": [step()]}, "mailbox_id"),
        ("/api/v1/salesforce/dead-letters/replay", {"ids": [HUGE]}, "ids.0"),
        ("/api/v1/sequences", {"name": "a\u0000b", "mailbox_id": 1, "steps": [step()]}, "name"),
        (
            "/api/v1/sequences",
            {"name": "x", "mailbox_id": 1, "steps": [{**step(), "subject": "\u0000"}]},
            "steps.0.subject",
        ),
        ("/api/v1/salesforce/dead-letters/replay", {"ids": [False]}, "ids.0"),
        ("/api/v1/salesforce/dead-letters/replay", {"ids": ["1"]}, "ids.0"),
    ],
)
def test_a_bad_body_is_a_422_naming_the_field(
    api: ApiClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = api.post(path, body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert field in response.json["error"]["fields"], response.json


def test_a_boolean_is_not_taken_from_a_number(api: ApiClient) -> None:
    response = api.client.patch(
        "/api/v1/salesforce/settings",
        json={"create_leads": 0},
        headers={"Authorization": f"Bearer {api.token}"},
    )
    assert response.status_code == 422
    assert "create_leads" in (response.json or {})["error"]["fields"]


@pytest.mark.parametrize(
    "path",
    ["/api/v1/enrollments/99999999999", "/api/v1/mailboxes/2147483648", "/api/v1/sequences/0"],
)
def test_ids_no_row_can_have_are_a_json_404(api: ApiClient, path: str) -> None:
    response = api.get(path)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_a_misspelt_query_parameter_is_refused_not_ignored(api: ApiClient) -> None:
    response = api.get("/api/v1/messages?enrolment_id=1")
    assert response.status_code == 422
    assert response.json["error"]["fields"] == {"enrolment_id": "unknown query parameter"}


def test_unknown_paths_and_methods_under_the_api_answer_json(api: ApiClient) -> None:
    missing = api.get("/api/v1/no-such-thing")
    assert (missing.status_code, missing.mimetype) == (404, "application/json")
    wrong = api.client.delete("/api/v1/enrollments", headers={"Authorization": "Bearer x"})
    assert (wrong.status_code, wrong.mimetype) == (405, "application/json")
    assert "POST" in wrong.headers["Allow"]
