"""The opt-out list, its API and page, and enrolment refused with the reason and the date.

Through the real Flask app on both databases: an address added with a reason
ends its live enrolments and is refused by the API, the page and the CSV import
with that reason and when; removing it lets it be enrolled again (the ended
enrolment stays ended); every change says who made it; another team's
addresses are out of reach; an undeliverable address is refused with its date.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import session_scope
from core.models import Enrollment, Prospect, utcnow
from tests.conftest import ApiClient, create_user
from tests.integration.test_app_pages import World, build_world, csrf, signed_in

pytestmark = pytest.mark.integration


def api_for(app: Flask, client: FlaskClient, email: str, team: str) -> ApiClient:
    return ApiClient(
        client, create_user(app, email, team, "--name", "Robin Admin", "--role", "admin")
    )


def delete(api: ApiClient, path: str) -> Any:
    return api.client.delete(path, headers={"Authorization": f"Bearer {api.token}"})


def patch(api: ApiClient, path: str, body: Any) -> Any:
    return api.client.patch(path, json=body, headers={"Authorization": f"Bearer {api.token}"})


@pytest.fixture
def mine(app: Flask) -> World:
    return build_world(app, "Team A", "rep@team-a.test", "dana@acme.test", "ALPHA")


def test_adding_ends_live_enrolments_removing_keeps_them_ended_and_both_are_recorded(
    app: Flask, client: FlaskClient, mine: World
) -> None:
    api = api_for(app, client, "admin@team-a.test", "Team A")
    other = api.post("/api/v1/enrollments", {"sequence_id": mine.sequence_id, "email": "x@b.test"})
    assert other.status_code == 201

    added = api.post("/api/v1/opt-outs", {"email": " X@B.test ", "reason": "asked on the phone"})
    assert added.status_code == 201, added.json
    assert added.json["email"] == "x@b.test"
    assert added.json["reason"] == "asked on the phone"
    assert added.json["added_by"] == "Robin Admin"
    with session_scope() as session:
        assert session.get_one(Enrollment, other.json["id"]).state == "opted_out"
    again = api.post("/api/v1/opt-outs", {"email": "x@b.test", "reason": "a second reason"})
    assert (again.status_code, again.json["reason"]) == (200, "asked on the phone")

    listing = api.get("/api/v1/opt-outs").json
    assert [e["email"] for e in listing["opt_outs"]] == ["x@b.test"]
    assert listing["next_before"] is None

    prospect_id = added.json["prospect_id"]
    assert delete(api, f"/api/v1/opt-outs/{prospect_id}").status_code == 204
    assert delete(api, f"/api/v1/opt-outs/{prospect_id}").status_code == 404
    assert api.get("/api/v1/opt-outs").json["opt_outs"] == []
    with session_scope() as session:
        assert session.get_one(Enrollment, other.json["id"]).state == "opted_out"  # stays ended

    changes = api.get("/api/v1/opt-outs/changes").json["changes"]
    assert [(c["action"], c["source"], c["by"]) for c in changes] == [
        ("removed", "api", "Robin Admin"),
        ("added", "api", "Robin Admin"),
    ]


def test_enrolling_an_opted_out_or_undeliverable_address_says_why_and_since_when(
    app: Flask, client: FlaskClient, mine: World
) -> None:
    api = api_for(app, client, "admin@team-a.test", "Team A")
    assert api.post("/api/v1/opt-outs", {"email": "gone@b.test", "reason": "GDPR request"})
    with session_scope() as session:
        session.add(Prospect(team_id=mine.team_id, email="dead@b.test", undeliverable_at=utcnow()))
    # A fresh sequence: the world's prospect is already enrolled in the first.
    sequence = api.post(
        "/api/v1/sequences",
        {
            "name": "Second",
            "mailbox_id": mine.mailbox_id,
            "steps": [{"delay_seconds": 0, "subject": "Hi", "body_html": "<p>Hi</p>"}],
        },
    ).json
    today = f"{utcnow():%Y-%m-%d}"
    for email, expected in (
        ("gone@b.test", f"gone@b.test is on the opt-out list since {today}: GDPR request"),
        ("dead@b.test", f"dead@b.test is undeliverable: it hard-bounced on {today}"),
    ):
        answer = api.post("/api/v1/enrollments", {"sequence_id": sequence["id"], "email": email})
        assert (answer.status_code, answer.json["error"]["message"]) == (422, expected)

    page = signed_in(app, mine.user_email)
    token = csrf(page)
    by_hand = page.post(
        f"/sequences/{sequence['id']}/enroll",
        data={"csrf_token": token, "email": "gone@b.test", "name": ""},
    )
    assert "GDPR request" in by_hand.get_data(as_text=True)
    upload = page.post(
        f"/sequences/{sequence['id']}/import",
        data={
            "csrf_token": token,
            "file": (io.BytesIO(b"email,name\ngone@b.test,Gone\ndead@b.test,Dead\n"), "p.csv"),
        },
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    text = upload.get_data(as_text=True)
    assert f"since {today}: GDPR request" in text
    assert f"hard-bounced on {today}" in text


def test_the_page_adds_with_a_reason_refuses_bad_input_and_removes(app: Flask, mine: World) -> None:
    client = signed_in(app, mine.user_email)
    token = csrf(client, "/opt-outs")
    bad = client.post("/opt-outs", data={"csrf_token": token, "email": "nope", "reason": ""})
    assert bad.status_code == 422
    body = bad.get_data(as_text=True)
    assert "enter an address like name@example.com" in body
    assert "say why this address may not be emailed" in body

    added = client.post(
        "/opt-outs",
        data={"csrf_token": token, "email": "dana@acme.test", "reason": "no more, please"},
        follow_redirects=True,
    )
    assert added.status_code == 200
    page = added.get_data(as_text=True)
    assert "dana@acme.test is on the opt-out list" in page
    assert "no more, please" in page and f"Rep {mine.secret}" in page

    removed = client.post(
        f"/opt-outs/{mine.prospect_id}/remove", data={"csrf_token": token}, follow_redirects=True
    )
    assert "is off the opt-out list" in removed.get_data(as_text=True)
    history = re.findall(r"<td data-label=\"Change\">(\w+)</td>", removed.get_data(as_text=True))
    assert history == ["removed", "added"]
    with session_scope() as session:
        prospect = session.get_one(Prospect, mine.prospect_id)
        assert prospect.opted_out_at is None


def test_the_team_setting_is_on_by_default_and_changed_by_page_and_api(
    app: Flask, client: FlaskClient, mine: World
) -> None:
    api = api_for(app, client, "admin@team-a.test", "Team A")
    assert api.get("/api/v1/team").json["unsubscribe_headers"] is True
    off = patch(api, "/api/v1/team", {"unsubscribe_headers": False})
    assert (off.status_code, off.json["unsubscribe_headers"]) == (200, False)
    assert patch(api, "/api/v1/team", {"unsubscribe_headers": "no"}).status_code == 422

    page = signed_in(app, mine.user_email)
    assert "checked" not in page.get("/settings").get_data(as_text=True).split("unsubscribe")[1]
    page.post("/settings", data={"csrf_token": csrf(page), "unsubscribe_headers": "on"})
    assert api.get("/api/v1/team").json["unsubscribe_headers"] is True


def test_another_teams_list_is_out_of_reach(app: Flask, client: FlaskClient, mine: World) -> None:
    theirs = build_world(app, "Team B", "rep@team-b.test", "fox@other.test", "BRAVO")
    api_b = api_for(app, client, "admin@team-b.test", "Team B")
    assert api_b.post("/api/v1/opt-outs", {"email": "fox@other.test", "reason": "B's own"})
    api_a = api_for(app, client, "admin@team-a.test", "Team A")
    assert api_a.get("/api/v1/opt-outs").json["opt_outs"] == []
    assert api_a.get("/api/v1/opt-outs/changes").json["changes"] == []
    assert delete(api_a, f"/api/v1/opt-outs/{theirs.prospect_id}").status_code == 404
    page = signed_in(app, mine.user_email)
    assert "fox@other.test" not in page.get("/opt-outs").get_data(as_text=True)
    with session_scope() as session:
        still = session.scalar(
            select(Prospect.opted_out_at).where(Prospect.email == "fox@other.test")
        )
        assert still is not None
