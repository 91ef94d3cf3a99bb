"""`POST /api/v1/preview`: the editors' live preview as an API operation, on both databases."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ApiClient, create_user
from tests.integration.test_api import mailbox_body, sequence_body

pytestmark = pytest.mark.integration


def test_a_preview_fills_in_the_prospect_and_lists_what_is_missing(
    app: Flask, client: FlaskClient
) -> None:
    api = ApiClient(client, create_user(app, "owner@team-a.test", "Team A"))
    other = ApiClient(client, create_user(app, "owner@team-b.test", "Team B"))
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    sequence_id = api.post("/api/v1/sequences", sequence_body(mailbox_id)).json["id"]
    enrolled = api.post(
        "/api/v1/enrollments",
        {"sequence_id": sequence_id, "email": "dana@acme.test", "name": "Dana Scully"},
    )
    assert enrolled.status_code == 201, enrolled.json

    body = {
        "subject": "Hi {{first_name}}",
        "body": "<p>Hello {{first_name}} at {{company}}, {{frist_name}}</p><script>x()</script>",
        "prospect": "dana@acme.test",
    }
    answer = api.post("/api/v1/preview", body)
    assert answer.status_code == 200, answer.json
    assert answer.json["subject"] == "Hi Dana"
    assert answer.json["prospect"] == "dana@acme.test"
    assert answer.json["missing"] == ["company"]
    assert answer.json["unknown"] == ["{{frist_name}}"]
    assert "<script" not in answer.json["document"]
    assert any("company" in p for p in answer.json["problems"])

    # A To field stands in for an address that is not a prospect yet.
    stranger = api.post("/api/v1/preview", {"subject": "Hi {{first_name}}", "to": "Fox <f@x.test>"})
    assert stranger.json["subject"] == "Hi Fox" and stranger.json["prospect"] == "f@x.test"

    # Another team's prospect and mailbox are not found; bad fields are named.
    refused = other.post("/api/v1/preview", body)
    assert refused.status_code == 422 and "prospect" in refused.json["error"]["fields"]
    foreign = other.post("/api/v1/preview", {"subject": "x", "mailbox_id": mailbox_id})
    assert foreign.status_code == 422 and "mailbox_id" in foreign.json["error"]["fields"]
    unknown_field = api.post("/api/v1/preview", {"subjet": "x"})
    assert unknown_field.status_code == 422 and "subjet" in unknown_field.json["error"]["fields"]
