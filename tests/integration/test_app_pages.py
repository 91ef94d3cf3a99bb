"""The web app's pages through the Flask test client, on SQLite and PostgreSQL.

Two teams, each with a mailbox, a template, a two-step sequence with a sent
step that was opened, clicked and replied to, a one-off email and prospects —
built through the real code paths (the CLI, `enrolling.enroll`, the claim, the
send bookkeeping, `record_event`). Then: every page answers and shows only its
own team's rows; every route of the app, called with the other team's ids,
answers 404; nothing works signed out or without the CSRF token; every page
carries the security headers; user data is escaped; lists are paginated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import Settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.events import natural_key, record_event
from core.models import (
    EmailTemplate,
    Enrollment,
    EnrollmentState,
    Mailbox,
    OneOffEmail,
    OneOffStatus,
    Prospect,
    Sequence,
    SequenceStep,
    Team,
    User,
    utcnow,
)
from tests.conftest import create_user
from tests.integration.test_feed import PASSWORD, csrf_from, sign_in
from worker.sequences import claiming, delivering, enrolling
from worker.sync.base import SendResult

APP_BLUEPRINTS = (
    "optouts",
    "team_settings",
    "emails",
    "templates",
    "sequences",
    "enrollments",
    "prospects",
    "reports",
    "preview",
    "imap",
)


@dataclass
class World:
    team_id: int
    user_email: str
    mailbox_id: int
    template_id: int
    sequence_id: int
    enrollment_id: int
    prospect_id: int
    sent_id: int
    email_id: int
    secret: str  # a string only this team's pages may show


def build_world(app: Flask, team: str, user_email: str, prospect_email: str, secret: str) -> World:
    """A team with one of everything, made through the real code paths."""
    create_user(app, user_email, team, "--password", PASSWORD, "--name", f"Rep {secret}")
    now = utcnow()
    with session_scope() as session:
        team_row = session.scalars(select(Team).where(Team.name == team)).one()
        user = session.scalars(select(User).where(User.email == user_email)).one()
        mailbox = Mailbox(
            team_id=team_row.id,
            user_id=user.id,
            kind="imap",
            email=user_email,
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        template = EmailTemplate(
            team_id=team_row.id,
            name=f"Template {secret}",
            subject=f"Hello {{{{first_name}}}} {secret}",
            body_html=f"<p>Hi {{{{first_name}}}}, {secret}</p>",
        )
        sequence = Sequence(team_id=team_row.id, mailbox_id=mailbox.id, name=f"Sequence {secret}")
        sequence.steps = [
            SequenceStep(
                position=0,
                delay_seconds=0,
                subject=f"Intro {{{{first_name}}}} {secret}",
                body_html="<p>Hi {{first_name}}</p>",
            ),
            SequenceStep(
                position=1,
                delay_seconds=86400,
                subject="",
                body_html="<p>Bumping this.</p>",
                same_thread=True,
            ),
        ]
        session.add_all([template, sequence])
        session.flush()
        enrollment = enrolling.enroll(
            session,
            sequence=sequence,
            email=prospect_email,
            name=f"Dana {secret}",
            now=now,
        )
        session.flush()
        ids = (team_row.id, mailbox.id, template.id, sequence.id, enrollment.id)
        prospect_id = enrollment.prospect_id
    with session_scope() as session:
        sent = claiming.claim_due_step(session, ids[4], utcnow())
        assert sent is not None
        sent_id, message_id = sent.id, sent.message_id
    delivering._record_sent(sent_id, SendResult(message_id=message_id))
    with session_scope() as session:
        for kind, key, data in (
            ("open", natural_key("open", sent_id, 0, 1, "probable"), {"probable": True}),
            ("open", natural_key("open", sent_id, 0, 2, "counted"), {"hit_class": "person"}),
            ("click", natural_key("click", sent_id, 0, 0, 3), {"url": "https://acme.test/"}),
            ("reply", natural_key("reply", sent_id, "<r@x>"), {"from": prospect_email}),
        ):
            record_event(
                session,
                team_id=ids[0],
                key=key,
                kind=kind,
                sent_message_id=sent_id,
                enrollment_id=ids[4],
                prospect_id=prospect_id,
                data={"recipient": 0, **data},
            )
        enrolling.transition(
            session,
            ids[4],
            EnrollmentState.REPLIED,
            f"reply from {prospect_email}",
            from_states={"active"},
        )
        one_off = OneOffEmail(
            team_id=ids[0],
            mailbox_id=ids[1],
            prospect_id=prospect_id,
            to_addrs=[prospect_email],
            cc_addrs=[],
            subject=f"One-off {secret}",
            body_html=f"<p>{secret}</p>",
            status=OneOffStatus.SCHEDULED,
            send_at=now.replace(year=now.year + 1),
        )
        session.add(one_off)
        session.flush()
        email_id = one_off.id
    return World(
        team_id=ids[0],
        user_email=user_email,
        mailbox_id=ids[1],
        template_id=ids[2],
        sequence_id=ids[3],
        enrollment_id=ids[4],
        prospect_id=prospect_id,
        sent_id=sent_id,
        email_id=email_id,
        secret=secret,
    )


@pytest.fixture
def worlds(app: Flask) -> tuple[World, World]:
    return (
        build_world(app, "Team A", "rep@team-a.test", "dana@acme.test", "ALPHA"),
        build_world(app, "Team B", "rep@team-b.test", "fox@other.test", "BRAVO"),
    )


def signed_in(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    response = sign_in(client, email)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def csrf(client: FlaskClient, path: str = "/emails") -> str:
    return csrf_from(client.get(path).get_data(as_text=True))


def app_rules(app: Flask) -> list[Any]:
    return [r for r in app.url_map.iter_rules() if r.endpoint.split(".")[0] in APP_BLUEPRINTS]


def url_for_world(rule: Any, world: World) -> str:
    values = {
        "email_id": world.email_id,
        "template_id": world.template_id,
        "sequence_id": world.sequence_id,
        "number": 1,
        "enrollment_id": world.enrollment_id,
        "prospect_id": world.prospect_id,
        "token": "not-a-token",
    }
    path = str(rule.rule)
    for name, value in values.items():
        path = re.sub(rf"<(?:int:)?{name}>", str(value), path)
    assert "<" not in path, f"no test value for {rule.rule}"
    return path


def test_every_page_shows_the_teams_own_data_and_headers(
    app: Flask, worlds: tuple[World, World]
) -> None:
    mine, theirs = worlds
    client = signed_in(app, mine.user_email)
    for rule in app_rules(app):
        if "GET" not in rule.methods or rule.endpoint == "imap.connect":
            continue
        path = url_for_world(rule, mine)
        response = client.get(path)
        if rule.endpoint == "enrolling.import_confirm":
            continue
        assert response.status_code == 200, (path, response.status_code)
        page = response.get_data(as_text=True)
        assert theirs.secret not in page, f"{path} shows the other team's data"
        headers = response.headers
        assert "script-src 'self'" in headers["Content-Security-Policy"], path
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        assert (
            "unsafe-inline"
            not in headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
        )
        assert headers["X-Content-Type-Options"] == "nosniff", path
    # The lists show this team's rows.
    assert mine.secret in client.get("/sequences").get_data(as_text=True)
    assert f"Dana {mine.secret}" in client.get("/prospects").get_data(as_text=True)
    assert f"Template {mine.secret}" in client.get("/templates").get_data(as_text=True)
    assert f"One-off {mine.secret}" in client.get("/emails?view=scheduled").get_data(as_text=True)


def test_the_other_teams_ids_answer_404_on_every_route(
    app: Flask, worlds: tuple[World, World]
) -> None:
    mine, theirs = worlds
    client = signed_in(app, mine.user_email)
    token = csrf(client)
    checked = 0
    for rule in app_rules(app):
        path = url_for_world(rule, theirs)
        if path == url_for_world(rule, mine):
            continue  # no id in it: nothing of theirs to reach
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method, data={"csrf_token": token})
            assert response.status_code == 404, (method, path, response.status_code)
            checked += 1
    assert checked >= 20
    # Nothing of theirs changed.
    with session_scope() as session:
        enrollment_state = session.scalar(
            select(Enrollment.state).where(Enrollment.id == theirs.enrollment_id)
        )
        assert enrollment_state == "replied"
        assert session.get(OneOffEmail, theirs.email_id).status == "scheduled"  # type: ignore[union-attr]
        assert session.get(EmailTemplate, theirs.template_id) is not None


def test_signed_out_visitors_are_sent_to_sign_in_and_forms_need_the_csrf_token(
    app: Flask, client: FlaskClient, worlds: tuple[World, World]
) -> None:
    mine, _ = worlds
    for rule in app_rules(app):
        path = url_for_world(rule, mine)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method)
            if method == "POST":
                # The CSRF check comes first: a signed-out POST carries no session token.
                assert response.status_code in (400, 401), (method, path)
            elif rule.endpoint == "preview.preview_json":
                assert response.status_code == 401
            else:
                assert response.status_code == 302, (method, path)
                assert response.headers["Location"].startswith("/signin?next=")
    signed = signed_in(app, mine.user_email)
    refused = signed.post(f"/enrollments/{mine.enrollment_id}/finish", data={})
    assert refused.status_code == 400
    refused = signed.post("/preview", data={"subject": "x"})
    assert refused.status_code == 400
    too_large = signed.post(
        "/preview",
        data={"body_html": "x" * 200_001},
        headers={"X-CSRF-Token": csrf(signed)},
    )
    assert too_large.status_code == 413


def test_user_data_is_escaped_and_bodies_are_only_previewed_in_a_sandbox(
    app: Flask, worlds: tuple[World, World]
) -> None:
    mine, _ = worlds
    client = signed_in(app, mine.user_email)
    with session_scope() as session:
        prospect = session.get_one(Prospect, mine.prospect_id)
        prospect.name = '<script>alert("name")</script>'
        prospect.company = "<img src=x onerror=alert(1)>"
        step = session.scalars(
            select(SequenceStep).where(SequenceStep.sequence_id == mine.sequence_id)
        ).first()
        assert step is not None
        step.body_html = "<p>Hi</p><script>alert('body')</script>"
    page = client.get(f"/prospects/{mine.prospect_id}").get_data(as_text=True)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<img src=x" not in page
    step_page = client.get(f"/sequences/{mine.sequence_id}/steps/1").get_data(as_text=True)
    assert "<script>alert('body')" not in step_page
    # The preview is an iframe with an empty sandbox: no scripts, its own origin.
    assert re.search(r'<iframe class="preview-frame"[^>]* sandbox=""[^>]* srcdoc="', step_page)
    # Even the srcdoc holds the sanitized body only.
    srcdoc = re.search(r'srcdoc="([^"]*)"', step_page)
    assert srcdoc is not None and "script" not in srcdoc.group(1)


def test_lists_are_paginated_by_keyset(
    app: Flask, env: Settings, worlds: tuple[World, World]
) -> None:
    mine, _ = worlds
    client = signed_in(app, mine.user_email)
    with session_scope() as session:
        for n in range(60):
            session.add(
                Prospect(team_id=mine.team_id, email=f"p{n:02d}@bulk.test", name=f"Bulk {n:02d}")
            )
    first = client.get("/prospects?q=bulk").get_data(as_text=True)
    assert first.count('data-prospect="') == 50
    assert "Bulk 59" in first and "Bulk 10" in first and "Bulk 09" not in first
    next_link = re.search(r'href="([^"]*before=\d+[^"]*)" rel="next"', first)
    assert next_link is not None
    second = client.get(next_link.group(1).replace("&amp;", "&")).get_data(as_text=True)
    assert second.count('data-prospect="') == 10
    assert "Bulk 09" in second and "Bulk 10" not in second
    assert 'rel="next"' not in second
    assert client.get("/prospects?before=abc").status_code == 400
