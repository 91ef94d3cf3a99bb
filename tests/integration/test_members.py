"""Roles, members and invitations: the rules, through the real app, on both databases.

What an admin and a member see: a member is refused the admin pages and
operations with a 403 that names the admins (page and API `admin_only`); an
invitation link (shown on the page when no SMTP server is configured, or when
the configured one cannot be reached) is accepted once, with the CLI's password
rule, and signs the new member in; a used, revoked, replaced or expired link
gets a plain page that says so; an address with an account is refused; the last
admin can neither leave nor be demoted; removing someone ends their sessions
and tokens, disconnects their mailboxes and pauses their live enrolments with
the reason; another team's people and invitations answer 404.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import get_settings
from core.db import session_scope
from core.models import (
    ApiToken,
    Enrollment,
    EnrollmentTransition,
    Invitation,
    Mailbox,
    OneOffEmail,
    Sequence,
    User,
    utcnow,
)
from tests.conftest import create_user
from tests.integration.test_app_pages import World, build_world
from tests.integration.test_feed import PASSWORD, csrf_from, sign_in
from worker.sequences import enrolling

pytestmark = pytest.mark.integration

LINK = re.compile(r'value="(http://localhost:5000/join/[^"]+)"')
ADMIN = "ann@team-a.test"


def signed_in(app: Flask, email: str) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, email).status_code == 302
    return client


def post(client: FlaskClient, path: str, data: dict[str, str] | None = None) -> Any:
    token = csrf_from(client.get("/team/members").get_data(as_text=True))
    return client.post(path, data={**(data or {}), "csrf_token": token})


def invite_link(admin: FlaskClient, email: str, role: str = "member") -> str:
    answer = post(admin, "/team/members/invitations", {"email": email, "role": role})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    found = LINK.search(answer.get_data(as_text=True))
    assert found, "the page shows no invitation link"
    return found.group(1).removeprefix("http://localhost:5000")


def accept(app: FlaskClient | Flask, path: str, name: str, password: str = PASSWORD) -> Any:
    client = app.test_client() if isinstance(app, Flask) else app
    page = client.get(path)
    if page.status_code != 200:
        return page
    token = csrf_from(page.get_data(as_text=True))
    form = {"name": name, "password": password, "password_again": password, "csrf_token": token}
    return client.post(path, data=form)


def api(client: FlaskClient, token: str, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    return client.open(f"/api/v1{path}", method=method, json=body, headers=headers)


@pytest.fixture
def team_a(app: Flask) -> dict[str, str]:
    """Ann (admin, first user of Team A) and Bo (member, added to it by the CLI)."""
    admin_token = create_user(app, ADMIN, "Team A", "--password", PASSWORD, "--name", "Ann Admin")
    member_token = create_user(app, "bo@team-a.test", "Team A", "--password", PASSWORD)
    return {"admin": admin_token, "member": member_token}


# The guard reads one row either way: PostgreSQL only keeps make test inside its budget.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_member_is_refused_admin_pages_and_operations_with_the_admins_named(
    app: Flask, client: FlaskClient, team_a: dict[str, str]
) -> None:
    with session_scope() as session:
        roles = {email: role for email, role in session.execute(select(User.email, User.role))}
    assert roles == {ADMIN: "admin", "bo@team-a.test": "member"}

    member = signed_in(app, "bo@team-a.test")
    for path in ("/team/members", "/settings", "/settings/tracking-host"):
        refused = member.get(path)
        assert refused.status_code == 403, path
        page = refused.get_data(as_text=True)
        assert "Admins only" in page and "Ann Admin" in page and ADMIN in page, path
    assert "/team/members" not in member.get("/feed").get_data(as_text=True)  # no menu link
    token = csrf_from(member.get("/opt-outs").get_data(as_text=True))
    assert member.post("/settings", data={"csrf_token": token}).status_code == 403

    answer = api(client, team_a["member"], "GET", "/members")
    assert answer.status_code == 403
    assert answer.json["error"]["code"] == "admin_only"
    assert "Ann Admin <ann@team-a.test>" in answer.json["error"]["message"]
    for method, path, body in (
        ("POST", "/invitations", {"email": "x@y.test"}),
        ("PATCH", "/team", {"tracking_enabled": False}),
        ("PUT", "/team/tracking-host", {"host": "t.team-a.test"}),
        ("DELETE", "/opt-outs/1", None),
        ("PATCH", "/salesforce/settings", {"create_leads": True}),
        ("DELETE", "/salesforce/connection", None),
    ):
        refused = api(client, team_a["member"], method, path, body)
        assert refused.status_code == 403, (method, path, refused.json)
        assert refused.json["error"]["code"] == "admin_only", (method, path)
    assert api(client, team_a["member"], "GET", "/team").status_code == 200  # reading is fine

    admin = signed_in(app, ADMIN)
    page = admin.get("/team/members").get_data(as_text=True)
    assert "bo@team-a.test" in page and "Ann Admin" in page
    listed = api(client, team_a["admin"], "GET", "/members").json["members"]
    assert [(m["email"], m["role"]) for m in listed] == [
        (ADMIN, "admin"),
        ("bo@team-a.test", "member"),
    ]
    assert listed[0]["last_sign_in_at"] is not None and listed[1]["last_sign_in_at"] is not None


def test_an_invitation_link_works_once_then_says_why_it_does_not(
    app: Flask, team_a: dict[str, str]
) -> None:
    admin = signed_in(app, ADMIN)
    link = invite_link(admin, "cy@newcomer.test")
    with session_scope() as session:
        stored = session.scalars(select(Invitation)).one()
        assert link.rsplit("/", 1)[1] not in (stored.token_hash, stored.email)  # hashed only
    assert "Ann Admin invited you" in app.test_client().get(link).get_data(as_text=True)

    weak = accept(app, link, "Cy", password="cy@newcomer.test")
    assert weak.status_code == 422
    assert "must not be the email address" in weak.get_data(as_text=True)
    short = accept(app, link, "Cy", password="short")
    assert "at least 12 characters" in short.get_data(as_text=True)
    nameless = accept(app, link, "   ")
    assert "Enter your name" in nameless.get_data(as_text=True)

    newcomer = app.test_client()
    joined = accept(newcomer, link, "Cy Newcomer")
    assert joined.status_code == 302
    assert "cy@newcomer.test" in newcomer.get("/feed").get_data(as_text=True)  # signed in
    assert newcomer.get("/team/members").status_code == 403  # a member
    used = app.test_client().get(link)
    assert used.status_code == 410
    assert "already used" in used.get_data(as_text=True)
    assert sign_in(app.test_client(), "cy@newcomer.test").status_code == 302
    with session_scope() as session:
        cy = session.scalars(select(User).where(User.email == "cy@newcomer.test")).one()
        assert (cy.name, cy.role, cy.team.name) == ("Cy Newcomer", "member", "Team A")

    # An address with an account, in this team or another, is refused with a sentence.
    create_user(app, "dee@other.test", "Team B", "--password", PASSWORD)
    for email, words in (
        ("cy@newcomer.test", "already a member of your team"),
        ("DEE@other.test", "already has a Sightline account"),
    ):
        refused = post(admin, "/team/members/invitations", {"email": email, "role": "member"})
        assert refused.status_code == 409
        assert words in refused.get_data(as_text=True)


def test_revoked_replaced_and_expired_links_are_refused_with_the_reason(
    app: Flask, client: FlaskClient, team_a: dict[str, str]
) -> None:
    admin = signed_in(app, ADMIN)
    first = invite_link(admin, "eve@new.test")
    again = post(admin, "/team/members/invitations", {"email": "eve@new.test", "role": "member"})
    assert again.status_code == 409
    assert "already invited" in again.get_data(as_text=True)

    with session_scope() as session:
        invitation_id = session.scalars(select(Invitation.id)).one()
    resent = post(admin, f"/team/members/invitations/{invitation_id}/resend")
    second = LINK.search(resent.get_data(as_text=True))
    assert second is not None
    replaced = app.test_client().get(first)
    assert replaced.status_code == 410 and "not valid" in replaced.get_data(as_text=True)

    revoked = api(client, team_a["admin"], "POST", f"/invitations/{invitation_id}/revoke")
    assert revoked.status_code == 200 and revoked.json["state"] == "revoked"
    withdrawn = accept(app, second.group(1).removeprefix("http://localhost:5000"), "Eve")
    assert withdrawn.status_code == 410
    assert "withdrawn" in withdrawn.get_data(as_text=True)

    # Re-inviting a revoked address re-arms its one row; past its expiry the link is refused.
    answer = api(client, team_a["admin"], "POST", "/invitations", {"email": "eve@new.test"})
    assert answer.status_code == 201, answer.json
    assert answer.json["id"] == invitation_id and answer.json["emailed"] is False
    path = answer.json["link"].removeprefix("http://localhost:5000")
    with session_scope() as session:
        session.get_one(Invitation, invitation_id).expires_at = utcnow() - timedelta(seconds=1)
    expired = app.test_client().get(path)
    assert expired.status_code == 410 and "expired on" in expired.get_data(as_text=True)
    listed = api(client, team_a["admin"], "GET", "/invitations").json["invitations"]
    assert [(i["email"], i["state"]) for i in listed] == [("eve@new.test", "expired")]
    with session_scope() as session:
        assert session.scalar(select(User).where(User.email == "eve@new.test")) is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unreachable_mail_server_keeps_the_invitation_and_shows_the_link(
    app: Flask, team_a: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_SMTP_URL", "smtp://127.0.0.1:9")  # discard: nothing listens
    monkeypatch.setenv("SIGHTLINE_MAIL_FROM", "sightline@ops.test")
    get_settings.cache_clear()
    admin = signed_in(app, ADMIN)
    answer = post(admin, "/team/members/invitations", {"email": "fay@new.test", "role": "admin"})
    page = answer.get_data(as_text=True)
    assert "could not be sent" in page and "could not be reached" in page
    found = LINK.search(page)
    assert found is not None
    assert (
        accept(app, found.group(1).removeprefix("http://localhost:5000"), "Fay").status_code == 302
    )
    with session_scope() as session:
        assert session.scalar(select(User.role).where(User.email == "fay@new.test")) == "admin"


def test_the_last_admin_can_neither_leave_nor_be_demoted(
    app: Flask, client: FlaskClient, team_a: dict[str, str]
) -> None:
    with session_scope() as session:
        ann = session.scalars(select(User).where(User.email == ADMIN)).one().id
        bo = session.scalars(select(User).where(User.email == "bo@team-a.test")).one().id
    admin = signed_in(app, ADMIN)
    for path, data in (
        (f"/team/members/{ann}/role", {"role": "member"}),
        (f"/team/members/{ann}/remove", {}),
    ):
        refused = post(admin, path, data)
        assert refused.status_code == 302
        assert "only admin" in admin.get("/team/members").get_data(as_text=True)
    demote = api(client, team_a["admin"], "PATCH", f"/members/{ann}", {"role": "member"})
    assert demote.status_code == 409 and demote.json["error"]["code"] == "last_admin"
    leave = api(client, team_a["admin"], "DELETE", f"/members/{ann}")
    assert (
        leave.status_code == 409 and "make someone else an admin" in leave.json["error"]["message"]
    )

    promoted = api(client, team_a["admin"], "PATCH", f"/members/{bo}", {"role": "admin"})
    assert promoted.status_code == 200 and promoted.json["role"] == "admin"
    assert (
        api(client, team_a["admin"], "PATCH", f"/members/{ann}", {"role": "member"}).json["role"]
        == "member"
    )
    assert admin.get("/team/members").status_code == 403  # Ann is a member now
    bad = api(client, team_a["member"], "PATCH", f"/members/{bo}", {"role": "owner"})
    assert bad.status_code == 422 and "role" in bad.json["error"]["fields"]


def test_removal_pauses_live_enrolments_disconnects_mailboxes_and_ends_access(
    app: Flask, client: FlaskClient
) -> None:
    world: World = build_world(app, "Team A", "rep@team-a.test", "dana@acme.test", "ALPHA")
    admin_token = create_user(app, ADMIN, "Team A", "--password", PASSWORD, "--role", "admin")
    rep_session = signed_in(app, "rep@team-a.test")
    with session_scope() as session:
        sequence = session.get_one(Sequence, world.sequence_id)
        live = enrolling.enroll(
            session, sequence=sequence, email="gil@acme.test", name="Gil", now=utcnow()
        )
        later = OneOffEmail(
            team_id=sequence.team_id,
            mailbox_id=world.mailbox_id,
            to_addrs=["hal@acme.test"],
            subject="Next week",
            body_html="<p>Talk then.</p>",
            send_at=utcnow() + timedelta(days=2),
        )
        session.add(later)
        session.flush()
        live_id, later_id = live.id, later.id
        rep = session.scalars(select(User).where(User.email == "rep@team-a.test")).one().id

    removed = api(client, admin_token, "DELETE", f"/members/{rep}")
    assert removed.status_code == 200, removed.json
    assert removed.json["mailboxes_disconnected"] == [world.mailbox_id]
    assert removed.json["enrollments_paused"] == 1 and removed.json["tokens_revoked"] == 1
    assert removed.json["emails_cancelled"] == 2  # build_world's scheduled email, and this one
    with session_scope() as session:
        enrollment = session.get_one(Enrollment, live_id)
        assert enrollment.state == "paused"
        assert enrollment.state_reason == "paused: Rep ALPHA was removed from the team"
        history = session.scalars(
            select(EnrollmentTransition.reason).where(EnrollmentTransition.enrollment_id == live_id)
        ).all()
        assert history[-1] == "paused: Rep ALPHA was removed from the team"
        assert session.get_one(OneOffEmail, later_id).status == "cancelled"
        assert session.get_one(OneOffEmail, world.email_id).status == "cancelled"
        replied = session.get_one(Enrollment, world.enrollment_id)
        assert replied.state == "replied"  # a final state stays as it was
        mailbox = session.get_one(Mailbox, world.mailbox_id)
        assert mailbox.status == "disabled"
        assert mailbox.status_reason == "disconnected: Rep ALPHA was removed from the team"
        assert all(
            t.revoked_at for t in session.scalars(select(ApiToken).where(ApiToken.user_id == rep))
        )
        assert session.get_one(User, rep).removed_at is not None  # kept, not deleted
    assert rep_session.get("/feed").status_code == 302  # the session ended
    made_later = app.test_cli_runner().invoke(args=["tokens", "create", "rep@team-a.test"])
    fresh = made_later.output.strip().splitlines()[-1]
    assert api(client, fresh, "GET", "/mailboxes").status_code == 401
    assert sign_in(app.test_client(), "rep@team-a.test").status_code == 401
    listed = api(client, admin_token, "GET", "/members").json["members"]
    assert [m["email"] for m in listed] == [ADMIN]

    # Someone this team removed may be invited back: their account (and history) returns.
    back = api(client, admin_token, "POST", "/invitations", {"email": "rep@team-a.test"})
    assert back.status_code == 201, back.json
    assert (
        accept(
            app, back.json["link"].removeprefix("http://localhost:5000"), "Rep Again"
        ).status_code
        == 302
    )
    with session_scope() as session:
        returned = session.get_one(User, rep)
        assert (returned.removed_at, returned.name, returned.role) == (None, "Rep Again", "member")


def test_another_teams_people_and_invitations_answer_404(
    app: Flask, client: FlaskClient, team_a: dict[str, str]
) -> None:
    other = create_user(app, "zed@team-b.test", "Team B", "--password", PASSWORD)
    answer = api(client, team_a["admin"], "POST", "/invitations", {"email": "new@a.test"})
    invitation_id = answer.json["id"]
    with session_scope() as session:
        bo = session.scalars(select(User).where(User.email == "bo@team-a.test")).one().id
    for method, path, body in (
        ("PATCH", f"/members/{bo}", {"role": "admin"}),
        ("DELETE", f"/members/{bo}", None),
        ("POST", f"/invitations/{invitation_id}/resend", None),
        ("POST", f"/invitations/{invitation_id}/revoke", None),
    ):
        assert api(client, other, method, path, body).status_code == 404, (method, path)
    assert api(client, other, "GET", "/invitations").json == {"invitations": []}
    assert [m["email"] for m in api(client, other, "GET", "/members").json["members"]] == [
        "zed@team-b.test"
    ]
    zed = signed_in(app, "zed@team-b.test")
    assert post(zed, f"/team/members/{bo}/remove").status_code == 404
    assert post(zed, f"/team/members/invitations/{invitation_id}/revoke").status_code == 404
    with session_scope() as session:
        assert session.get_one(User, bo).removed_at is None
        assert session.get_one(Invitation, invitation_id).revoked_at is None
