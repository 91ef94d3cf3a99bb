"""What a person sees of Salesforce through API v1: usage, settings, dead letters, replay."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import Settings, get_settings
from core.db import session_scope
from core.events import queue_salesforce_task
from core.models import Team
from tests.conftest import ApiClient, create_user
from tests.fakes.salesforce import FakeSalesforce
from worker.salesforce.outbox import flush_team


@pytest.fixture
def org(
    fake_salesforce: FakeSalesforce, env: Settings, monkeypatch: pytest.MonkeyPatch
) -> FakeSalesforce:
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", fake_salesforce.instance_url)
    monkeypatch.setenv("SALESFORCE_ACCESS_TOKEN", fake_salesforce.access_token)
    get_settings.cache_clear()
    return fake_salesforce


def team(name: str) -> int:
    with session_scope() as session:
        return int(session.scalars(select(Team.id).where(Team.name == name)).one())


def owe(team_id: int, subjects: list[str], email: str = "dana@acme.test") -> None:
    with session_scope() as session:
        for subject in subjects:
            queue_salesforce_task(
                session,
                team_id=team_id,
                key=f"task:reply:{team_id}:{subject}",
                kind="task_reply",
                who_email=email,
                event_id=None,
                payload={"subject": subject, "description": "Thanks"},
            )


def patch(api: ApiClient, path: str, body: Any) -> Any:
    return api.client.patch(path, json=body, headers={"Authorization": f"Bearer {api.token}"})


def test_usage_shows_what_salesforce_said_and_the_queue(
    api: ApiClient, org: FakeSalesforce
) -> None:
    before = api.get("/api/v1/salesforce/usage").json
    assert before["api_usage"] is None and before["calls_today"] == 0
    org.add_contact("dana@acme.test")
    org.set_api_usage(8_000, 10_000)
    owe(team("Team A"), ["one", "two"])
    owe(team("Team A"), ["three"], email="nobody@acme.test")
    flush_team(team("Team A"))

    usage = api.get("/api/v1/salesforce/usage").json
    assert usage["org"] == "default"
    assert usage["api_usage"]["max"] == 10_000
    assert usage["api_usage"]["used"] == org.api_usage[0]
    assert usage["api_usage"]["share_percent"] == round(org.api_usage[0] / 100, 2)
    assert usage["budget_share"] == 80
    assert usage["engagement_deferred"] is True
    assert usage["calls_today"] == 3
    assert usage["parked_until"] is None
    assert usage["outbox"] == {
        "pending": 0,
        "in_flight": 0,
        "waiting_who": 1,
        "done": 2,
        "failed": 0,
    }


def test_a_parked_org_says_until_when(api: ApiClient, org: FakeSalesforce) -> None:
    org.add_contact("dana@acme.test")
    owe(team("Team A"), ["one"])
    org.faults.add("request_limit_exceeded")
    flush_team(team("Team A"))
    usage = api.get("/api/v1/salesforce/usage").json
    assert usage["parked_reason"] == "limit"
    assert usage["parked_until"] is not None
    assert usage["outbox"]["pending"] == 1


def test_settings_are_checked_and_kept(api: ApiClient, org: FakeSalesforce) -> None:
    shown = api.get("/api/v1/salesforce/connection").json
    assert (shown["kind"], shown["ready"], shown["budget_share"], shown["create_leads"]) == (
        "default",
        True,
        80,
        False,
    )
    for bad, field in [
        ({"budget_share": 0}, "budget_share"),
        ({"budget_share": 101}, "budget_share"),
        ({"create_leads": "yes please"}, "create_leads"),
        ({"budget": 50}, "budget"),
    ]:
        answer = patch(api, "/api/v1/salesforce/settings", bad)
        assert answer.status_code == 422, bad
        assert field in answer.json["error"]["fields"]
    answer = patch(api, "/api/v1/salesforce/settings", {"budget_share": 60, "create_leads": True})
    assert answer.status_code == 200
    assert (answer.json["budget_share"], answer.json["create_leads"]) == (60, True)
    assert api.get("/api/v1/salesforce/usage").json["budget_share"] == 60
    assert (
        patch(api, "/api/v1/salesforce/settings", {"budget_share": 70}).json["create_leads"] is True
    )
    assert (
        api.client.delete(
            "/api/v1/salesforce/connection", headers={"Authorization": f"Bearer {api.token}"}
        ).status_code
        == 404
    )  # the default org is not the team's to disconnect


def test_dead_letters_are_listed_and_replayed_per_team(
    app: Flask, client: FlaskClient, api: ApiClient, org: FakeSalesforce
) -> None:
    other = ApiClient(client, create_user(app, "b@team-b.test", "Team B"))
    org.configure(validation_rules=(("Task", "Subject", "blocked"),))
    org.add_contact("dana@acme.test")
    owe(team("Team A"), ["fine", "blocked 1", "blocked 2"])
    owe(team("Team B"), ["blocked 3"])
    flush_team(team("Team A"))
    flush_team(team("Team B"))

    listed = api.get("/api/v1/salesforce/dead-letters?limit=1").json
    assert [d["subject"] for d in listed["dead_letters"]] == ["blocked 1"]
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in listed["dead_letters"][0]["last_error"]
    page_2 = api.get(f"/api/v1/salesforce/dead-letters?after_id={listed['next_after_id']}").json
    assert [d["subject"] for d in page_2["dead_letters"]] == ["blocked 2"]
    assert page_2["next_after_id"] is None
    theirs = other.get("/api/v1/salesforce/dead-letters").json["dead_letters"]
    assert [d["subject"] for d in theirs] == ["blocked 3"]

    bad = api.post("/api/v1/salesforce/dead-letters/replay", {})
    assert bad.status_code == 422 and "ids" in bad.json["error"]["fields"]
    assert api.post("/api/v1/salesforce/dead-letters/replay", {"ids": [theirs[0]["id"]]}).json == {
        "replayed": 0
    }
    org.configure(validation_rules=())
    first = listed["dead_letters"][0]["id"]
    assert api.post("/api/v1/salesforce/dead-letters/replay", {"ids": [first]}).json == {
        "replayed": 1
    }
    assert flush_team(team("Team A")).done == 1
    assert api.post("/api/v1/salesforce/dead-letters/replay", {"all": True}).json == {"replayed": 1}
    flush_team(team("Team A"))
    assert api.get("/api/v1/salesforce/dead-letters").json["dead_letters"] == []
    assert sorted(t["Subject"] for t in org.tasks()) == ["blocked 1", "blocked 2", "fine"]
    assert [
        d["subject"] for d in other.get("/api/v1/salesforce/dead-letters").json["dead_letters"]
    ] == ["blocked 3"]  # Team B's stays until Team B replays it


def test_routes_need_a_token(client: FlaskClient, org: FakeSalesforce) -> None:
    for path in (
        "/api/v1/salesforce/usage",
        "/api/v1/salesforce/connection",
        "/api/v1/salesforce/dead-letters",
    ):
        assert client.get(path).status_code == 401
    assert client.post("/api/v1/salesforce/connect", json={"kind": "oauth"}).status_code == 401
    assert client.get("/api/v1/salesforce/connection").headers["WWW-Authenticate"]
