"""The add-ons' API operations (what the Outlook pane calls), on both databases.

The panel of a thread's people and its actions go through the web app's own
paths (enrol, pause, resume, stop); content choices give the plan's words to a
Solo team; a draft's tracking is made once per draft; another team's ids are
not found; bad input is a 422 naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, update

from core.crypto import encrypt_json
from core.db import session_scope
from core.events import record_event
from core.models import (
    Document,
    DocumentStatus,
    Enrollment,
    Mailbox,
    Sequence,
    SequenceStep,
    Team,
    User,
    utcnow,
)
from tests.conftest import ApiClient, create_user
from web.documents.common import PLAN_MESSAGE
from worker.sequences.enrolling import enroll

pytestmark = pytest.mark.integration


def team_of(email: str) -> tuple[int, int]:
    with session_scope() as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        return user.team_id, user.id


def seller(team_id: int, user_id: int, email: str) -> int:
    """A mailbox, a two-step sequence and Dana enrolled in it; the sequence's id."""
    with session_scope() as session:
        mailbox = Mailbox(
            team_id=team_id,
            user_id=user_id,
            kind="imap",
            email=email,
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team_id, mailbox_id=mailbox.id, name="Intro")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=3600, subject="Hi", body_html="<p>Hi</p>"),
            SequenceStep(position=1, delay_seconds=3600, subject="", body_html="<p>Bump</p>"),
        ]
        session.add(sequence)
        session.flush()
        enroll(
            session, sequence=sequence, email="dana@prospect.test", name="Dana Scully", now=utcnow()
        )
        return sequence.id


def body(response: Any) -> Any:
    return response.get_json()


def test_panel_actions_feed_content_and_drafts_for_the_users_team_only(
    app: Flask, api: ApiClient
) -> None:
    team_id, user_id = team_of("owner@team-a.test")
    sequence_id = seller(team_id, user_id, "owner@team-a.test")
    other = ApiClient(api.client, create_user(app, "rep@team-b.test", "Team B"))
    other_team, other_user = team_of("rep@team-b.test")
    other_sequence = seller(other_team, other_user, "rep@team-b.test")

    panel = body(
        api.post(
            "/api/v1/addons/panel",
            {"addresses": ["Dana <DANA@prospect.test>", "owner@team-a.test", "new@prospect.test"]},
        )
    )
    assert panel["skipped"] == ["owner@team-a.test"]
    dana, new = panel["people"]
    assert (dana["name"], dana["add_to"]) == ("Dana Scully", [])
    [enrolment] = dana["enrollments"]
    assert (enrolment["state"], enrolment["actions"], enrolment["next_step"]) == (
        "active",
        ["pause", "stop"],
        1,
    )
    assert new["prospect_id"] is None
    assert new["add_to"] == [{"id": sequence_id, "name": "Intro"}]

    path = f"/api/v1/addons/enrollments/{enrolment['id']}"
    paused = body(api.post(f"{path}/pause", {}))
    assert paused["ok"] and paused["enrollment"]["actions"] == ["resume", "stop"]
    again = body(api.post(f"{path}/pause", {}))
    assert not again["ok"] and "paused" in again["message"]
    assert body(api.post(f"{path}/resume", {}))["enrollment"]["state"] == "active"
    assert body(api.post(f"{path}/stop", {}))["enrollment"]["state"] == "finished"
    with session_scope() as session:
        assert session.get_one(Enrollment, enrolment["id"]).state_reason == (
            "finished by owner@team-a.test"
        )
    added = body(
        api.post(
            f"/api/v1/addons/sequences/{sequence_id}/enrollments",
            {"address": "new@prospect.test", "name": "Nia"},
        )
    )
    assert added["ok"] and added["message"] == "Nia added to Intro."
    twice = body(
        api.post(
            f"/api/v1/addons/sequences/{sequence_id}/enrollments", {"address": "new@prospect.test"}
        )
    )
    assert not twice["ok"] and "already enrolled" in twice["message"]

    # Another team's ids are not found, whoever asks; its people are not ours.
    assert (
        api.post(
            f"/api/v1/addons/sequences/{other_sequence}/enrollments", {"address": "x@y.test"}
        ).status_code
        == 404
    )
    with session_scope() as session:
        theirs = session.scalars(
            select(Enrollment.id).where(Enrollment.team_id == other_team)
        ).one()
    assert api.post(f"/api/v1/addons/enrollments/{theirs}/pause", {}).status_code == 404
    assert (
        body(other.post("/api/v1/addons/panel", {"addresses": ["nia@x.test"]}))["people"][0][
            "prospect_id"
        ]
        is None
    )

    # Content: the plan's words on Solo, the library on the Team plan.
    assert body(api.get("/api/v1/addons/content")) == {"documents": [], "unavailable": PLAN_MESSAGE}
    with session_scope() as session:
        session.execute(update(Team).where(Team.id == team_id).values(plan="team"))
        document = Document(
            team_id=team_id,
            name="pricing.pdf",
            kind="pdf",
            content_type="application/pdf",
            size_bytes=1,
            sha256="0" * 64,
            status=DocumentStatus.READY,
            page_count=2,
        )
        session.add(document)
        session.flush()
        document_id = document.id
    content = body(api.get("/api/v1/addons/content"))
    assert content["documents"] == [
        {"id": document_id, "name": "pricing.pdf", "kind": "pdf", "page_count": 2}
    ]
    assert body(other.get("/api/v1/addons/content"))["unavailable"] == PLAN_MESSAGE

    draft = {
        "source": "outlook",
        "draft_ref": "AAMk-1",
        "document_id": document_id,
        "recipients": {"to": ["Dana Scully <dana@prospect.test>"]},
        "track_opens": True,
    }
    made = body(api.post("/api/v1/addons/drafts", draft))
    assert made["per_recipient"] and "/d/" in made["link_url"] and made["html"].count("<") == 3
    assert (
        body(api.post("/api/v1/addons/drafts", draft))["sent_message_id"] == made["sent_message_id"]
    )
    bad = api.post("/api/v1/addons/drafts", {**draft, "recipients": {"to": ["not an address"]}})
    assert bad.status_code == 422 and "recipients.to" in body(bad)["error"]["fields"]
    assert other.post("/api/v1/addons/drafts", draft).status_code in (403, 404)
    assert other.post("/api/v1/addons/drafts", {**draft, "document_id": None}).status_code == 200

    # Dana opens it: the panel's last opens and the feed say so, in the feed's words.
    with session_scope() as session:
        record_event(
            session,
            team_id=team_id,
            key="open:test",
            kind="open",
            sent_message_id=made["sent_message_id"],
            prospect_id=dana["prospect_id"],
            data={"hit_class": "person"},
        )
    opens = body(api.post("/api/v1/addons/panel", {"addresses": ["dana@prospect.test"]}))
    assert [a["text"] for a in opens["people"][0]["last_opens"]] == [
        "Dana Scully opened the email — sent from Outlook"
    ]
    with session_scope() as session:
        record_event(
            session,
            team_id=team_id,
            key="reply:test",
            kind="reply",
            prospect_id=dana["prospect_id"],
            data={"subject": "Re: Hi"},
        )
    feed = body(api.get("/api/v1/addons/feed?limit=5"))["items"]
    assert [(i["kind"], i["origin"], i["text"]) for i in feed] == [
        ("reply", None, "Replied: Dana Scully — “Re: Hi”"),
        ("open", "outlook", "Dana Scully opened the email — sent from Outlook"),
    ]
    assert body(other.get("/api/v1/addons/feed"))["items"] == []
    assert api.get("/api/v1/addons/feed?limit=0").status_code == 422
