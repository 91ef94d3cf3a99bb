"""The empty Live Feed is a first-run checklist, ticked from the team's own data.

A new team's feed says what to do first (connect a mailbox, connect Salesforce,
create a sequence), each step linking to where it is done and ticked once the
team's rows say so; another team's rows tick nothing. Once anything is in the
feed the list is gone. "Connect Salesforce" starts the same OAuth flow the API
starts, when the operator has set up a Connected App.
"""

from __future__ import annotations

import html
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import get_settings
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    Mailbox,
    SalesforceAuthKind,
    SalesforceConnection,
    Sequence,
    Team,
    User,
)
from tests.conftest import create_user
from tests.integration.test_app_pages import csrf, signed_in
from tests.integration.test_events_worker import make_sent
from tests.integration.test_feed import PASSWORD, add_event

pytestmark = pytest.mark.integration


def steps(client: FlaskClient) -> dict[str, tuple[bool, str]]:
    """Each step on the feed page: done?, and where its link or form goes ("" when none)."""
    page = client.get("/feed").get_data(as_text=True)
    found: dict[str, tuple[bool, str]] = {}
    for key, done, body in re.findall(
        r'<li class="step [a-z]+" data-step="(\w+)" data-done="(true|false)">(.*?)</li>',
        page,
        re.S,
    ):
        target = re.search(r'(?:href|action)="([^"]+)"', body)
        found[key] = (done == "true", html.unescape(target.group(1)) if target else "")
    return found


def team_of(email: str) -> tuple[int, int]:
    with session_scope() as session:
        user = session.scalars(select(User).where(User.email == email)).one()
        return user.team_id, user.id


def add_mailbox(team_id: int, user_id: int, email: str) -> int:
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
        return mailbox.id


def test_a_new_teams_feed_is_a_checklist_ticked_from_its_own_data(app: Flask) -> None:
    create_user(app, "rep@new.test", "New Team", "--password", PASSWORD)
    create_user(app, "rep@other.test", "Other Team", "--password", PASSWORD)
    client = signed_in(app, "rep@new.test")
    team_id, user_id = team_of("rep@new.test")
    other_team, other_user = team_of("rep@other.test")

    first = steps(client)
    assert first == {
        "mailbox": (False, "/mailboxes"),
        "salesforce": (False, ""),  # no Connected App here: the hint says who sets it up
        "sequence": (False, "/sequences/new"),
    }
    page = client.get("/feed").get_data(as_text=True)
    assert "Get started" in page and "Nothing yet" not in page
    assert "SALESFORCE_CLIENT_ID" in page

    # Another team's mailbox and sequence tick nothing here.
    theirs = add_mailbox(other_team, other_user, "rep@other.test")
    with session_scope() as session:
        session.add(Sequence(team_id=other_team, mailbox_id=theirs, name="Theirs"))
    assert steps(client) == first

    mine = add_mailbox(team_id, user_id, "rep@new.test")
    assert steps(client)["mailbox"][0] is True
    with session_scope() as session:
        session.add(Sequence(team_id=team_id, mailbox_id=mine, name="Intro"))
        session.add(
            SalesforceConnection(
                team_id=team_id,
                auth_kind=SalesforceAuthKind.OAUTH,
                org_id="00D000000000001",
                status="active",
            )
        )
    assert {key: done for key, (done, _) in steps(client).items()} == {
        "mailbox": True,
        "salesforce": True,
        "sequence": True,
    }

    # Something in the feed: the list is gone.
    with session_scope() as session:
        team_name = session.get_one(Team, team_id).name
    add_event(make_sent(team_name, "dana@acme.test"), "sent", "sent:first")
    page = client.get("/feed").get_data(as_text=True)
    assert "Get started" not in page and 'data-step="' not in page


def test_connect_salesforce_starts_the_oauth_flow_when_a_connected_app_is_set(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALESFORCE_CLIENT_ID", "sightline-test-client")
    monkeypatch.setenv("SALESFORCE_CLIENT_SECRET", "sightline-test-secret")
    get_settings.cache_clear()
    create_user(app, "rep@new.test", "New Team", "--password", PASSWORD)
    client = signed_in(app, "rep@new.test")
    done, action = steps(client)["salesforce"]
    assert (done, action) == (False, "/feed/connect-salesforce")
    forged = client.post(action)
    assert forged.status_code in (400, 403)  # CSRF like every other form
    answer = client.post(action, data={"csrf_token": csrf(client, "/feed")})
    assert answer.status_code == 303
    assert "/connect/start/" in answer.headers["Location"]


def test_a_filtered_empty_feed_is_not_the_checklist(client: FlaskClient, app: Flask) -> None:
    create_user(app, "rep@new.test", "New Team", "--password", PASSWORD)
    client = signed_in(app, "rep@new.test")
    page = client.get("/feed?kind=reply").get_data(as_text=True)
    assert "Get started" not in page and "Nothing yet" in page
