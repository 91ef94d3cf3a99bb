"""API v1 as a client sees it: auth, validation that names fields, tenant isolation."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from core.crypto import decrypt_json
from core.db import session_scope
from core.models import Mailbox, SentMessage
from tests.conftest import ApiClient, create_user


def json_of(response: TestResponse) -> Any:
    body = response.get_json()
    assert body is not None, response.get_data(as_text=True)
    return body


def mailbox_body(email: str = "rep@seller.test", **overrides: Any) -> dict[str, Any]:
    server = {
        "host": "127.0.0.1",
        "port": 1,
        "username": email,
        "password": "pw",
        "security": "none",
    }
    body = {"kind": "imap", "email": email, "imap": server, "smtp": dict(server), "verify": False}
    body.update(overrides)
    return body


def sequence_body(mailbox_id: int) -> dict[str, Any]:
    return {
        "name": "Intro",
        "mailbox_id": mailbox_id,
        "steps": [
            {"delay_seconds": 0, "subject": "Hello {{first_name}}", "body_html": "<p>Hi</p>"},
            {"delay_seconds": 86400, "body_html": "<p>Bump</p>", "same_thread": True},
        ],
    }


def test_requests_without_a_valid_token_are_refused(client: FlaskClient, api: ApiClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = client.get("/api/v1/mailboxes", headers=headers)
        assert response.status_code == 401
        assert json_of(response)["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert api.get("/api/v1/mailboxes").status_code == 200


def test_cli_prints_the_token_alone_on_its_last_line(app: Flask) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "users",
            "create",
            "Ann@Example.test",
            "--team",
            "Blue",
            "--password",
            "correct horse",
        ]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("sl_") and " " not in lines[-1]
    assert "created team 'Blue'" in result.output
    again = runner.invoke(args=["users", "create", "ann@example.test", "--team", "Blue"])
    assert again.exit_code != 0
    assert "already exists" in again.output
    bad = runner.invoke(args=["users", "create", "not-an-email", "--team", "Blue"])
    assert bad.exit_code != 0
    assert "not a valid email" in bad.output


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "imap"}, "email"),
        (mailbox_body(email="nope"), "email"),
        (mailbox_body(kind="pop3"), "kind"),
        (
            mailbox_body(imap={"host": "h", "port": 99999, "username": "u", "password": "p"}),
            "imap.port",
        ),
        (
            mailbox_body(
                smtp={"host": "h", "port": 25, "username": "u", "password": "p", "security": "ssl3"}
            ),
            "smtp.security",
        ),
        (mailbox_body(extra_field=1), "extra_field"),
    ],
)
def test_invalid_mailbox_names_the_field(api: ApiClient, body: dict[str, Any], field: str) -> None:
    response = api.post("/api/v1/mailboxes", body)
    assert response.status_code == 422
    assert field in response.json["error"]["fields"]
    assert field in response.json["error"]["message"]


def test_bad_json_is_a_400_never_a_500(api: ApiClient) -> None:
    response = api.client.post(
        "/api/v1/sequences",
        data="{not json",
        headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert json_of(response)["error"]["code"] == "invalid_json"
    assert api.post("/api/v1/sequences", [1, 2]).status_code == 422
    not_json = api.client.post(
        "/api/v1/sequences", data="x", headers={"Authorization": f"Bearer {api.token}"}
    )
    assert not_json.status_code == 415


def test_mailbox_credentials_are_encrypted_and_never_returned(api: ApiClient) -> None:
    response = api.post(
        "/api/v1/mailboxes",
        mailbox_body(
            imap={
                "host": "127.0.0.1",
                "port": 1,
                "username": "u",
                "password": "hunter2-imap",
                "security": "none",
            }
        ),
    )
    assert response.status_code == 201, response.json
    assert "hunter2-imap" not in response.get_data(as_text=True)
    with session_scope() as session:
        stored = session.scalars(select(Mailbox)).one()
        assert "hunter2-imap" not in stored.credentials_encrypted
        assert decrypt_json(stored.credentials_encrypted)["imap"]["password"] == "hunter2-imap"
    duplicate = api.post("/api/v1/mailboxes", mailbox_body())
    assert duplicate.status_code == 409


def test_unreachable_mailbox_is_refused_with_a_reason(api: ApiClient) -> None:
    response = api.post("/api/v1/mailboxes", mailbox_body(verify=True))
    assert response.status_code == 422
    assert response.json["error"]["code"] == "mailbox_unreachable"
    assert "IMAP connection to 127.0.0.1 failed" in response.json["error"]["message"]


def test_sequence_validation(api: ApiClient) -> None:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    body = sequence_body(mailbox_id)
    body["steps"][0]["same_thread"] = True
    response = api.post("/api/v1/sequences", body)
    assert response.status_code == 422
    assert "steps.0.same_thread" in response.json["error"]["fields"]
    body = sequence_body(mailbox_id)
    del body["steps"][0]["subject"]
    response = api.post("/api/v1/sequences", body)
    assert response.json["error"]["fields"] == {
        "steps.0.subject": "required unless same_thread is true"
    }
    body = sequence_body(mailbox_id)
    body["steps"][1]["delay_second"] = 5
    assert "steps.1.delay_second" in api.post("/api/v1/sequences", body).json["error"]["fields"]


def test_enrollment_lifecycle_and_errors(api: ApiClient) -> None:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    sequence = api.post("/api/v1/sequences", sequence_body(mailbox_id)).json
    assert [s["position"] for s in sequence["steps"]] == [0, 1]
    created = api.post(
        "/api/v1/enrollments",
        {"sequence_id": sequence["id"], "email": "Dana@ACME.test", "name": "Dana"},
    )
    assert created.status_code == 201, created.json
    enrollment = created.json
    assert enrollment["state"] == "active"
    assert enrollment["email"] == "dana@acme.test"
    assert enrollment["steps_sent"] == 0
    assert enrollment["transitions"][0]["reason"] == "enrolled"
    fetched = api.get(f"/api/v1/enrollments/{enrollment['id']}").json
    assert fetched["id"] == enrollment["id"]
    again = api.post(
        "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": "dana@acme.test"}
    )
    assert again.status_code == 409
    missing = api.post("/api/v1/enrollments", {"sequence_id": 99999, "email": "x@acme.test"})
    assert missing.status_code == 422
    assert "sequence_id" in missing.json["error"]["fields"]
    assert api.get("/api/v1/messages").status_code == 422
    assert api.get("/api/v1/messages?enrollment_id=abc").status_code == 422
    # A number parameter named with no number is not a number (found by schemathesis).
    events_after = f"/api/v1/events?enrollment_id={enrollment['id']}&after_id="
    for empty in ("/api/v1/messages?enrollment_id=", events_after):
        refused = api.get(empty)
        assert refused.status_code == 422, empty
        assert refused.json["error"]["message"].endswith("expected a whole number")
    messages = api.get(f"/api/v1/messages?enrollment_id={enrollment['id']}")
    assert messages.json == {"messages": []}
    events = api.get(f"/api/v1/events?enrollment_id={enrollment['id']}").json
    assert events == {"events": [], "next_after_id": None}


def test_teams_cannot_see_each_others_resources(
    app: Flask, client: FlaskClient, api: ApiClient
) -> None:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    sequence = api.post("/api/v1/sequences", sequence_body(mailbox_id)).json
    enrollment = api.post(
        "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": "dana@acme.test"}
    ).json
    other = ApiClient(client, create_user(app, "spy@team-b.test", "Team B"))
    for path in (
        f"/api/v1/mailboxes/{mailbox_id}",
        f"/api/v1/sequences/{sequence['id']}",
        f"/api/v1/enrollments/{enrollment['id']}",
        f"/api/v1/messages?enrollment_id={enrollment['id']}",
        f"/api/v1/events?enrollment_id={enrollment['id']}",
    ):
        response = other.get(path)
        assert response.status_code == 404, path
    assert other.get("/api/v1/mailboxes").json == {"mailboxes": []}
    # Team B cannot build on team A's mailbox or enrol into its sequence.
    assert other.post("/api/v1/sequences", sequence_body(mailbox_id)).status_code == 422
    assert (
        other.post(
            "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": "x@y.test"}
        ).status_code
        == 422
    )


def test_healthz_reports_database_redis_and_workers(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    health = json_of(response)
    assert (health["database"], health["redis"], health["workers"]) == ("ok", "ok", 0)
    assert health["hits_backlog"] == 0


def test_messages_list_shows_message_ids(api: ApiClient) -> None:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    sequence = api.post("/api/v1/sequences", sequence_body(mailbox_id)).json
    enrollment = api.post(
        "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": "dana@acme.test"}
    ).json
    with session_scope() as session:
        team_id = session.get_one(Mailbox, mailbox_id).team_id
        session.add(
            SentMessage(
                team_id=team_id,
                mailbox_id=mailbox_id,
                enrollment_id=enrollment["id"],
                step_position=0,
                prospect_id=enrollment["prospect_id"],
                message_id="<a.1@seller.test>",
                subject="Hello",
                to_addrs=["dana@acme.test"],
                cc_addrs=[],
                status="sent",
            )
        )
    listed = api.get(f"/api/v1/messages?enrollment_id={enrollment['id']}").json["messages"]
    assert [m["message_id"] for m in listed] == ["<a.1@seller.test>"]
