"""API v1 operations for what the pages do: enrolments by hand, prospects, templates, emails.

Each through the real app and the same services the pages call, on both
databases; another team's ids answer 404 exactly like missing ones.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.db import session_scope
from core.models import (
    EnrollmentState,
    Mailbox,
    OneOffEmail,
    OneOffStatus,
    SentMessage,
    SequencePause,
    utcnow,
)
from tests.conftest import ApiClient, create_user
from tests.integration.test_api import mailbox_body, sequence_body

pytestmark = pytest.mark.integration


class Client(ApiClient):
    def send(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.open(
            path,
            method=method,
            headers=self._headers(),
            data=None if body is None else json.dumps(body),
            content_type="application/json" if body is not None else None,
        )


@pytest.fixture
def two_teams(app: Flask, client: FlaskClient) -> tuple[Client, Client]:
    return (
        Client(client, create_user(app, "owner@team-a.test", "Team A")),
        Client(client, create_user(app, "owner@team-b.test", "Team B")),
    )


def _enrolled(api: Client, email: str = "dana@acme.test") -> dict[str, Any]:
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    sequence = api.post("/api/v1/sequences", sequence_body(mailbox_id)).json
    response = api.post("/api/v1/enrollments", {"sequence_id": sequence["id"], "email": email})
    assert response.status_code == 201, response.json
    return dict(response.json)


def test_an_enrolment_is_paused_resumed_and_finished_by_hand(
    two_teams: tuple[Client, Client],
) -> None:
    api, other = two_teams
    enrollment = _enrolled(api)
    base = f"/api/v1/enrollments/{enrollment['id']}"
    assert other.post(f"{base}/pause", {}).status_code == 404
    assert api.send("POST", f"{base}/resume").status_code == 409  # active: nothing to resume
    paused = api.send("POST", f"{base}/pause")
    assert paused.status_code == 200
    assert paused.json["state"] == EnrollmentState.PAUSED
    assert paused.json["transitions"][-1]["reason"] == "paused by owner@team-a.test"
    assert api.send("POST", f"{base}/resume").json["state"] == EnrollmentState.ACTIVE
    assert api.send("POST", f"{base}/finish").json["state"] == EnrollmentState.FINISHED
    refused = api.send("POST", f"{base}/pause")
    assert refused.status_code == 409
    assert "finished" in refused.json["error"]["message"]


def test_prospects_are_listed_searched_paged_and_changed(two_teams: tuple[Client, Client]) -> None:
    api, other = two_teams
    enrollment = _enrolled(api)
    for n in range(3):
        api.post(
            "/api/v1/prospects/do-not-track", {"email": f"p{n}@beta.test", "do_not_track": False}
        )
    first = api.get("/api/v1/prospects?limit=2").json
    assert len(first["prospects"]) == 2 and first["next_after_id"] is not None
    rest = api.get(f"/api/v1/prospects?limit=2&after_id={first['next_after_id']}").json
    emails = [p["email"] for p in first["prospects"] + rest["prospects"]]
    assert sorted(emails) == ["dana@acme.test", "p0@beta.test", "p1@beta.test", "p2@beta.test"]
    assert rest["next_after_id"] is None
    found = api.get("/api/v1/prospects?q=ACME").json["prospects"]
    assert [p["email"] for p in found] == ["dana@acme.test"]
    assert found[0]["enrollments"] == 1
    assert other.get("/api/v1/prospects").json["prospects"] == []

    path = f"/api/v1/prospects/{enrollment['prospect_id']}"
    assert other.get(path).status_code == 404
    assert other.send("PATCH", path, {"name": "x"}).status_code == 404
    changed = api.send(
        "PATCH",
        path,
        {"name": "  Dana \n Smith ", "company": "Acme", "time_zone": "europe/berlin",
         "do_not_track": True},
    )  # fmt: skip
    assert changed.status_code == 200, changed.json
    assert (changed.json["name"], changed.json["company"]) == ("Dana Smith", "Acme")
    assert (changed.json["time_zone"], changed.json["time_zone_source"]) == ("Europe/Berlin", "set")
    assert changed.json["do_not_track"] is True
    bad = api.send("PATCH", path, {"time_zone": "Mars/Olympus"})
    assert bad.status_code == 422 and "time_zone" in bad.json["error"]["fields"]
    cleared = api.send("PATCH", path, {"name": None, "time_zone": None}).json
    assert cleared["name"] is None and cleared["company"] == "Acme"
    assert cleared["time_zone_source"] != "set"
    assert api.get("/api/v1/prospects?q=x&limit=0").status_code == 422
    assert api.get("/api/v1/prospects?limit=1&limit=2").status_code == 422


def test_templates_are_created_checked_changed_and_deleted(
    two_teams: tuple[Client, Client],
) -> None:
    api, other = two_teams
    body = {"name": " Intro ", "subject": "Hi {{first_name}}", "body_html": "Hello there"}
    created = api.post("/api/v1/templates", body)
    assert created.status_code == 201, created.json
    template = created.json
    assert template["name"] == "Intro"
    assert template["body_html"].startswith("<p>")  # plain text made HTML, as the form does
    unknown = api.post("/api/v1/templates", {**body, "subject": "Hi {{frist_name}}"})
    assert unknown.status_code == 422
    assert "not a placeholder" in unknown.json["error"]["fields"]["subject"]
    assert api.post("/api/v1/templates", {**body, "name": "  "}).status_code == 422

    path = f"/api/v1/templates/{template['id']}"
    assert other.get(path).status_code == 404
    assert other.send("DELETE", path).status_code == 404
    assert other.get("/api/v1/templates").json["templates"] == []
    changed = api.send("PATCH", path, {"subject": "Hello {{company|there}}"}).json
    assert (changed["name"], changed["subject"]) == ("Intro", "Hello {{company|there}}")
    assert [t["id"] for t in api.get("/api/v1/templates").json["templates"]] == [template["id"]]
    assert api.send("DELETE", path).status_code == 204
    assert api.get(path).status_code == 404


def test_one_off_emails_are_listed_read_and_cancelled_until_sent(
    two_teams: tuple[Client, Client],
) -> None:
    api, other = two_teams
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        ids = []
        for status in (OneOffStatus.SCHEDULED, OneOffStatus.CLAIMED):
            email = OneOffEmail(
                team_id=mailbox.team_id,
                mailbox_id=mailbox.id,
                to_addrs=["dana@acme.test"],
                cc_addrs=[],
                subject="Hello",
                body_html="<p>Hi</p>",
                status=status,
                send_at=utcnow(),
                created_at=utcnow(),
            )
            session.add(email)
            session.flush()
            ids.append(email.id)
    scheduled, claimed = ids
    listed = api.get("/api/v1/emails").json["emails"]
    assert [e["id"] for e in listed] == ids
    assert [e["id"] for e in api.get("/api/v1/emails?status=claimed").json["emails"]] == [claimed]
    assert other.get("/api/v1/emails").json["emails"] == []
    assert other.get(f"/api/v1/emails/{scheduled}").status_code == 404
    assert other.send("POST", f"/api/v1/emails/{scheduled}/cancel").status_code == 404
    assert api.get(f"/api/v1/emails/{scheduled}").json["phase"] == "sending"  # due, unclaimed
    too_late = api.send("POST", f"/api/v1/emails/{claimed}/cancel")
    assert too_late.status_code == 409
    cancelled = api.send("POST", f"/api/v1/emails/{scheduled}/cancel")
    assert cancelled.status_code == 200
    assert (cancelled.json["status"], cancelled.json["phase"]) == ("cancelled", "cancelled")
    assert api.send("POST", f"/api/v1/emails/{scheduled}/cancel").status_code == 409


def test_sequences_and_their_steps_are_changed_while_history_stays_true(
    two_teams: tuple[Client, Client],
) -> None:
    api, other = two_teams
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    second_mailbox = api.post("/api/v1/mailboxes", mailbox_body("rep2@seller.test")).json["id"]
    spare = api.post("/api/v1/sequences", sequence_body(mailbox_id)).json
    sequence = api.post("/api/v1/sequences", sequence_body(mailbox_id)).json
    base = f"/api/v1/sequences/{sequence['id']}"
    listed = api.get("/api/v1/sequences?limit=1").json
    assert [s["id"] for s in listed["sequences"]] == [spare["id"]]
    after = api.get(f"/api/v1/sequences?after_id={listed['next_after_id']}").json
    assert [s["id"] for s in after["sequences"]] == [sequence["id"]]
    assert other.get("/api/v1/sequences").json["sequences"] == []
    for method, path in (("PATCH", base), ("DELETE", base), ("DELETE", f"{base}/steps/1")):
        assert other.send(method, path, {} if method == "PATCH" else None).status_code == 404

    changed = api.send(
        "PATCH",
        base,
        {"name": " Intro  v2 ", "time_zone": "europe/paris", "tracking": False,
         "send_window": {"days": ["mon"], "start": "09:00", "end": "17:00"},
         "mailbox_id": second_mailbox},
    )  # fmt: skip
    assert changed.status_code == 200, changed.json
    assert (changed.json["name"], changed.json["time_zone"]) == ("Intro v2", "Europe/Paris")
    assert changed.json["send_window"]["days"] == ["mon"]
    assert (changed.json["tracking"], changed.json["mailbox_id"]) == (False, second_mailbox)
    assert api.send("PATCH", base, {"tracking": None}).json["tracking"] is None

    added = api.post(f"{base}/steps", {"delay_seconds": 60, "subject": "Last", "body_html": "Bye"})
    assert added.status_code == 201, added.json
    assert [s["subject"] for s in added.json["steps"]][2] == "Last"
    assert added.json["steps"][2]["body_html"].startswith("<p>")  # as the step form saves it
    unknown = api.post(
        f"{base}/steps", {"delay_seconds": 0, "subject": "{{nope}}", "body_html": "x"}
    )
    assert unknown.status_code == 422 and "subject" in unknown.json["error"]["fields"]
    edited = api.send("PATCH", f"{base}/steps/2", {"subject": "Really last"}).json
    assert edited["steps"][2]["subject"] == "Really last"
    assert api.send("PATCH", f"{base}/steps/0", {"same_thread": True}).status_code == 422
    assert api.send("PATCH", f"{base}/steps/9", {"subject": "x"}).status_code == 404

    assert api.send("PUT", f"{base}/steps/order", {"order": [0, 1]}).status_code == 422
    # Step 1 replies in the thread without a subject: it cannot come first.
    assert api.send("PUT", f"{base}/steps/order", {"order": [1, 0, 2]}).status_code == 422
    reordered = api.send("PUT", f"{base}/steps/order", {"order": [2, 0, 1]})
    assert reordered.status_code == 200, reordered.json
    assert [s["subject"] for s in reordered.json["steps"]] == [
        "Really last",
        "Hello {{first_name}}",
        "",
    ]
    assert [s["position"] for s in reordered.json["steps"]] == [0, 1, 2]
    assert api.send("DELETE", f"{base}/steps/0").status_code == 409  # not the last
    assert len(api.send("DELETE", f"{base}/steps/2").json["steps"]) == 2

    enrollment = api.post(
        "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": "d@acme.test"}
    ).json
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, second_mailbox)
        session.add(
            SentMessage(
                team_id=mailbox.team_id,
                mailbox_id=mailbox.id,
                enrollment_id=enrollment["id"],
                step_position=1,
                prospect_id=enrollment["prospect_id"],
                message_id="<a.1@seller.test>",
                subject="Hello",
                to_addrs=["d@acme.test"],
                cc_addrs=[],
                status="sent",
            )
        )
        session.add(SequencePause(sequence_id=sequence["id"], team_id=mailbox.team_id, reason="x"))
    assert other.send("POST", f"{base}/resume").status_code == 404
    resumed = api.send("POST", f"{base}/resume")
    assert resumed.json == {"sequence_id": sequence["id"], "released": 0}
    with session_scope() as session:
        assert session.get(SequencePause, sequence["id"]) is None
    assert api.send("PUT", f"{base}/steps/order", {"order": [1, 0]}).status_code == 409
    assert api.send("DELETE", f"{base}/steps/1").status_code == 409  # sent to someone
    assert api.send("PATCH", base, {"mailbox_id": mailbox_id}).status_code == 409
    assert api.send("DELETE", base).status_code == 409  # somebody is enrolled
    assert api.send("DELETE", f"/api/v1/sequences/{spare['id']}").status_code == 204
    assert api.get(f"/api/v1/sequences/{spare['id']}").status_code == 404


def test_a_one_off_email_is_written_checked_like_the_compose_page_and_scheduled(
    two_teams: tuple[Client, Client],
) -> None:
    api, other = two_teams
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    api.post("/api/v1/opt-outs", {"email": "gone@acme.test", "reason": "asked"})
    later = (
        (utcnow() + timedelta(days=2))
        .replace(microsecond=0)
        .astimezone(timezone(timedelta(hours=1)))
    )
    body = {
        "mailbox_id": mailbox_id,
        "to": ["Dana Scully <dana@acme.test>"],
        "subject": "Hi {{first_name}}",
        "body_html": "Hello from {{company|us}}",
        "send_at": later.isoformat(),
    }
    refusals: dict[str, dict[str, Any]] = {
        "to": {"to": ["dana@acme.test", "gone@acme.test"]},
        "subject": {"subject": "Hi {{frist_name}}"},
        "send_at": {"send_at": "2020-01-01T09:00:00Z"},
        "mailbox_id": {"mailbox_id": mailbox_id + 1000},
    }
    for field, change in refusals.items():
        refused = api.post("/api/v1/emails", {**body, **change})
        assert refused.status_code == 422, (field, refused.json)
        assert field in refused.json["error"]["fields"], refused.json
    naive = api.post("/api/v1/emails", {**body, "send_at": later.replace(tzinfo=None).isoformat()})
    assert naive.json["error"]["fields"] == {
        "send_at": "give a time zone (e.g. 2026-12-31T17:00:00Z)"
    }
    assert other.post("/api/v1/emails", body).json["error"]["fields"].keys() == {"mailbox_id"}

    created = api.post("/api/v1/emails", body)
    assert created.status_code == 201, created.json
    email = created.json
    assert (email["status"], email["phase"]) == ("scheduled", "scheduled")
    assert email["subject"] == "Hi Dana"  # filled from the first recipient, as the page does
    assert datetime.fromisoformat(email["send_at"]) == later
    assert email["to"] == ["dana@acme.test"] and email["tracked"] is True
    assert api.send("POST", f"/api/v1/emails/{email['id']}/cancel").json["status"] == "cancelled"

    now = api.post("/api/v1/emails", {**body, "send_at": None, "tracked": False})
    assert now.status_code == 201, now.json
    assert (now.json["phase"], now.json["tracked"]) == ("sending", False)


def test_a_sequence_made_in_one_call_is_checked_as_its_steps_would_be(
    two_teams: tuple[Client, Client],
) -> None:
    """`POST /sequences` with its steps: the step form's rules, each field named by step."""
    api, _ = two_teams
    mailbox_id = api.post("/api/v1/mailboxes", mailbox_body()).json["id"]
    body = sequence_body(mailbox_id)
    body["steps"][0]["body_html"] = "<p>Hi {{frist_name}}</p>"
    body["steps"][1]["subject"] = "Re {{compny}}"
    refused = api.post("/api/v1/sequences", body)
    assert refused.status_code == 422, refused.json
    fields = refused.json["error"]["fields"]
    assert set(fields) == {"steps.0.body_html", "steps.1.subject"}, fields
    assert "frist_name" in fields["steps.0.body_html"]

    first = {"delay_seconds": 0, "subject": "Hi", "body_html": "x", "same_thread": True}
    threaded = api.post("/api/v1/sequences", {**body, "steps": [first]})
    assert set(threaded.json["error"]["fields"]) == {"steps.0.same_thread"}

    body = sequence_body(mailbox_id)
    body["steps"][0]["body_html"] = "<p onclick='x()'>Hi {{first_name}}</p><script>x()</script>"
    made = api.post("/api/v1/sequences", body)
    assert made.status_code == 201, made.json
    saved = made.json["steps"][0]["body_html"]
    assert "<script" not in saved and "onclick" not in saved and "{{first_name}}" in saved
