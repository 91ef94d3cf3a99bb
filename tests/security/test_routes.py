"""Every route there is, enumerated from the URL map: who may call it, and what comes back.

The rules come from `app.url_map` (plus the ASGI front door's own `/o/`, `/c/`
and `/feed/stream`), so a route added tomorrow is checked tomorrow: either it
is in `PUBLIC` with the reason anyone may call it, or it must refuse anonymous
callers. Two teams, each with one of everything (tests/integration/
test_app_pages.py's `build_world`, plus a document, its page and a link, on the
team plan), and then, for every rule and method:

- anonymous: refused (sign-in redirect, 401, or the CSRF refusal), nothing written;
- team A with team B's ids (A's session, CSRF token and API token): 404, and
  nothing anywhere changed; lists of A never show B's rows;
- ids no row can have (2**31, 10**20): 404, never a 500 or a 405;
- every HTML page has the security headers (CSP with frame-ancestors, nosniff),
  every answer has nosniff.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import session_scope
from core.models import (
    ApiToken,
    Base,
    Device,
    Document,
    DocumentLink,
    DocumentPage,
    DocumentStatus,
    Invitation,
    Team,
    User,
    utcnow,
)
from core.tokens import hash_api_token, new_api_token
from tests.integration.test_app_pages import World, build_world, csrf, signed_in
from tests.integration.test_tracking_edge import call
from web.addons.outlook.pages import FRAME_ANCESTORS
from web.tracking.app import SightlineAsgi

pytestmark = pytest.mark.integration

# endpoint → why anyone may call it
PUBLIC = {
    "static": "stylesheets, scripts and images of the pages",
    "health.healthz": "the load balancer's check: ok/degraded and a worker count, nothing else",
    "feed.index": "/ only redirects: to the feed when signed in, else to sign-in",
    "auth.signin": "signing in",
    "auth.signout": "signing out (CSRF-protected): a visitor has no session to end",
    "viewer.view": "a recipient's document link, authorised by its signed token",
    "viewer.page_image": "the same link's page images",
    "viewer.download": "the same link's download, when the sender allowed it",
    "viewer.beacon": "the same link's reading time reports, with a signed visit token",
    "unsubscribe.confirm_page": "a recipient's unsubscribe link (its signed token): a page "
    "that changes nothing",
    "unsubscribe.unsubscribe": "RFC 8058 one-click unsubscribe and the confirm page's button, "
    "authorised by the link's signed token; never needs a session",
    "connect.callback": "the OAuth redirect back from Google, Microsoft (and Salesforce, handed "
    "on): finished only by the browser (sl_connect cookie) and signed-in user that started it, "
    "and only proposed: the confirm page saves",
    "api.salesforce_oauth_callback": "the OAuth redirect back from Salesforce: parks the answer "
    "under a one-time id and hands the browser on to connect.callback",
    "api.openapi_document": "the API's published description",
    "api.index": "the API's name, version and where its description is",
    "layout.favicon": "the site's icon, which browsers ask for before anyone signs in",
    "members.join": "an invitation's link (its random token, stored hashed): the invitee "
    "has no account yet; a link that is not pending only gets a page saying so",
    "outlook_addin.manifest": "the Outlook add-in's manifest an admin uploads: URLs, no data",
    "outlook_addin.compose_pane": "an Outlook task pane's shell: its data comes from the API "
    "with the add-in's bearer",
    "outlook_addin.read_pane": "the same, for a message being read",
    "outlook_addin.function_file": "the function file the manifest names: Office.js only",
}
# Pages Outlook on the web frames (web.addons.outlook.pages.FRAME_ANCESTORS), and only it.
FRAMED_BY_OUTLOOK = {
    "outlook_addin.compose_pane",
    "outlook_addin.read_pane",
    "outlook_addin.function_file",
}
ASGI_PUBLIC = {
    "/o/": "the tracking pixel",
    "/c/": "tracked links",
    "/webhooks/gmail": "Google Pub/Sub push, authorised by its signed token or shared secret",
    "/webhooks/graph": "Microsoft Graph notifications: handshake and clientState",
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SECRET_FREE_TABLES = {"api_tokens", "sign_ins", "devices"}  # touched by signing in / using a token
# Form posts that answer a missing (or another team's) row by going back to their
# page with a message, exactly as for an id that does not exist.
NOT_FOUND_PAGES = {"mailboxes.page_disconnect", "mailboxes.page_reconnect"}
# JSON bodies that pass validation, so an ownership check is what answers.
BODIES: dict[str, dict[str, Any]] = {
    "documents_api.update_document": {"allow_download": True},
    "documents_api.update_link": {"revoked": True},
    "documents_api.put_step_documents": {"documents": []},
}


@dataclass
class Side:
    world: World
    token: str
    document_id: int
    link_id: int
    token_id: int = 0  # the API token `token`'s row
    device_id: int = 0  # a browser the user signed in from
    user_id: int = 0  # the team's one user (its admin)
    invitation_id: int = 0  # a pending invitation to the team

    def values(self) -> dict[str, Any]:
        w = self.world
        return {
            "email_id": w.email_id,
            "template_id": w.template_id,
            "sequence_id": w.sequence_id,
            "enrollment_id": w.enrollment_id,
            "prospect_id": w.prospect_id,
            "mailbox_id": w.mailbox_id,
            "sent_message_id": w.sent_id,
            "document_id": self.document_id,
            "link_id": self.link_id,
            "token_id": self.token_id,
            "device_id": self.device_id,
            "user_id": self.user_id,
            "invitation_id": self.invitation_id,
            "number": 1,
            "position": 0,
            "width": 800,
            "token": "not-a-token",
            "kind": "gmail",
            "filename": "app.css",
            "start_id": "not-a-start-link-0123456789",
            "confirm_id": "not-a-confirmation-0123456789",
            "job_id": "not-a-failed-job-0123456789",
            "action": "pause",  # /api/v1/addons/enrollments/<id>/<action>
        }


def side(app: Flask, team: str, user: str, prospect: str, secret: str) -> Side:
    world = build_world(app, team, user, prospect, secret)
    token = new_api_token()
    with session_scope() as session:
        session.get_one(Team, world.team_id).plan = "team"
        user_id = session.scalars(select(User.id).where(User.email == user)).one()
        api_token = ApiToken(user_id=user_id, token_hash=hash_api_token(token), prefix=token[:10])
        # A device id is ours (a random cookie value), never typed: only its length is bounded.
        public_id = "device-" + hashlib.sha256(secret.encode()).hexdigest()[:24]
        device = Device(public_id=public_id, team_id=world.team_id, user_id=user_id)
        session.add_all([api_token, device])
        document = Document(
            team_id=world.team_id,
            name=f"Deck {secret}.pdf",
            kind="pdf",
            content_type="application/pdf",
            size_bytes=100,
            sha256="0" * 64,
            status=DocumentStatus.READY,
            page_count=1,
        )
        session.add(document)
        session.flush()
        session.add(DocumentPage(document_id=document.id, number=1, width=800, height=1000))
        link = DocumentLink(
            team_id=world.team_id,
            document_id=document.id,
            sent_message_id=world.sent_id,
            recipient=0,
            prospect_id=world.prospect_id,
        )
        session.add(link)
        invitation = Invitation(
            team_id=world.team_id,
            email=f"invited-{secret.lower()}@new.test",
            token_hash=hashlib.sha256(f"invitation-{secret}".encode()).hexdigest(),
            expires_at=utcnow() + timedelta(days=7),
        )
        session.add(invitation)
        session.flush()
        ids = (document.id, link.id, api_token.id, device.id, user_id, invitation.id)
        return Side(world, token, *(int(i) for i in ids))


@pytest.fixture
def sides(app: Flask) -> tuple[Side, Side]:
    return (
        side(app, "Team A", "rep@team-a.test", "dana@acme.test", "ALPHA"),
        side(app, "Team B", "rep@team-b.test", "fox@other.test", "BRAVO"),
    )


def path_of(rule: Any, values: dict[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"no test value for <{name}> in {rule.rule}: add one to Side.values"
        return str(values[name])

    return re.sub(r"<(?:[^:>]+:)?([^>]+)>", fill, rule.rule)


def rules(app: Flask) -> list[Any]:
    return sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint))


def methods(rule: Any) -> list[str]:
    return [m for m in METHODS if m in rule.methods]


def snapshot(skip: set[str] = SECRET_FREE_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (but `skip`), to prove a request changed nothing."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with session_scope() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in skip:
                continue
            rows = session.execute(select(table)).all()
            found[table.name] = sorted((tuple(map(repr, row)) for row in rows), key=str)
    return found


class Caller:
    """One visitor: a Flask test client with (or without) a session, and maybe an API token."""

    def __init__(self, client: FlaskClient, api_token: str | None, csrf_token: str | None) -> None:
        self.client = client
        self.api_token = api_token
        self.csrf_token = csrf_token

    def open(self, rule: Any, path: str, method: str) -> Any:
        headers = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}
        if method == "GET":
            return self.client.get(path, headers=headers)
        if path.startswith("/api/"):
            body = BODIES.get(rule.endpoint, {})
            return self.client.open(path, method=method, json=body, headers=headers)
        data = {"csrf_token": self.csrf_token} if self.csrf_token else {}
        return self.client.open(path, method=method, data=data, headers=headers)


def anonymous(app: Flask) -> Caller:
    client = app.test_client()
    # An anonymous session can get a CSRF token (the sign-in form has one): the
    # login check must refuse on its own, not only the CSRF check.
    return Caller(client, None, csrf(client, "/signin"))


def test_public_routes_are_the_listed_ones_only(app: Flask) -> None:
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    gone = set(PUBLIC) - endpoints
    assert not gone, f"PUBLIC names routes that no longer exist: {gone}"
    assert len(endpoints - set(PUBLIC)) >= 60  # the rest is checked below


def test_every_non_public_route_refuses_anonymous_callers(
    app: Flask, sides: tuple[Side, Side]
) -> None:
    mine, _ = sides
    caller = anonymous(app)
    before = snapshot(skip=set())
    checked = 0
    for rule in rules(app):
        if rule.endpoint in PUBLIC:
            continue
        path = path_of(rule, mine.values())
        for method in methods(rule):
            response = caller.open(rule, path, method)
            status = response.status_code
            where = f"{method} {path} ({rule.endpoint})"
            if path.startswith("/api/"):
                assert status == 401, f"{where}: {status}"
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            elif status == 302:
                assert response.headers["Location"].startswith("/signin"), where
            else:
                assert status == 401, f"{where}: {status} {response.get_data(as_text=True)[:200]}"
            checked += 1
    assert checked >= 80
    assert snapshot(skip=set()) == before, "an anonymous request changed the database"


def test_an_api_token_that_does_not_exist_opens_nothing(
    app: Flask, sides: tuple[Side, Side]
) -> None:
    mine, _ = sides
    caller = Caller(app.test_client(), "sl_" + "x" * 43, None)
    for rule in rules(app):
        if not rule.rule.startswith("/api/") or rule.endpoint in PUBLIC:
            continue
        path = path_of(rule, mine.values())
        for method in methods(rule):
            assert caller.open(rule, path, method).status_code == 401, (method, path)


def test_the_live_feed_stream_refuses_anonymous_and_forged_sessions(app: Flask) -> None:
    asgi = SightlineAsgi()
    asgi.start()

    async def scenario() -> list[int]:
        try:
            plain = await call(asgi, "GET", "/feed/stream")
            forged_cookie = {"Cookie": "session=eyJ1c2VyX2lkIjoxfQ.x.y"}
            forged = await call(asgi, "GET", "/feed/stream", forged_cookie)
            return [plain.status, forged.status]
        finally:
            await asgi.stop()

    assert asyncio.run(scenario()) == [401, 401]


def test_team_a_reaches_nothing_of_team_b_through_any_route(
    app: Flask, sides: tuple[Side, Side]
) -> None:
    mine, theirs = sides
    client = signed_in(app, mine.world.user_email)
    caller = Caller(client, mine.token, csrf(client))
    before = snapshot()
    checked = 0
    for rule in rules(app):
        path = path_of(rule, theirs.values())
        if rule.endpoint in PUBLIC or path == path_of(rule, mine.values()):
            continue  # nothing of theirs in the path
        for method in methods(rule):
            response = caller.open(rule, path, method)
            if rule.endpoint in NOT_FOUND_PAGES and response.status_code == 302:
                # The page's own way of saying "not found" (the same for any missing id).
                assert "not+found" in response.headers["Location"], path
                checked += 1
                continue
            assert response.status_code == 404, (
                f"{method} {path} ({rule.endpoint}) as team A: {response.status_code} "
                f"{response.get_data(as_text=True)[:300]}"
            )
            checked += 1
    assert checked >= 40
    assert snapshot() == before, "team A changed something through team B's ids"


def test_team_a_lists_never_show_team_b(app: Flask, sides: tuple[Side, Side]) -> None:
    mine, theirs = sides
    client = signed_in(app, mine.world.user_email)
    caller = Caller(client, mine.token, None)
    shown = 0
    for rule in rules(app):
        if "GET" not in rule.methods or rule.endpoint in PUBLIC or rule.arguments:
            continue
        response = caller.open(rule, rule.rule, "GET")
        body = response.get_data(as_text=True)
        assert theirs.world.secret not in body, f"{rule.rule} shows team B's data"
        shown += mine.world.secret in body
    assert shown >= 5  # the lists do show the team's own rows


def test_ids_no_row_can_have_answer_404_everywhere(app: Flask, sides: tuple[Side, Side]) -> None:
    mine, _ = sides
    client = signed_in(app, mine.world.user_email)
    caller = Caller(client, mine.token, csrf(client))
    id_names = {n for n, v in mine.values().items() if isinstance(v, int)}
    checked = 0
    for rule in rules(app):
        names = [n for n in rule.arguments if n in id_names]
        if not names or rule.endpoint in PUBLIC:
            continue
        for huge in (2**31, 10**20):
            for name in names:
                path = path_of(rule, {**mine.values(), name: huge})
                for method in methods(rule):
                    status = caller.open(rule, path, method).status_code
                    assert status == 404, f"{method} {path}: {status}"
                    checked += 1
    assert checked >= 100


def test_every_page_has_the_security_headers(app: Flask, sides: tuple[Side, Side]) -> None:
    mine, _ = sides
    client = signed_in(app, mine.world.user_email)
    caller = Caller(client, mine.token, None)
    anonymous_client = app.test_client()
    pages = 0
    for rule in rules(app):
        if "GET" not in rule.methods:
            continue
        path = path_of(rule, mine.values())
        for response in (caller.open(rule, path, "GET"), anonymous_client.get(path)):
            headers = response.headers
            assert headers.get("X-Content-Type-Options") == "nosniff", path
            if response.mimetype != "text/html":
                continue
            pages += 1
            policy = headers.get("Content-Security-Policy", "")
            if rule.endpoint in FRAMED_BY_OUTLOOK:
                assert policy.endswith(f"frame-ancestors {FRAME_ANCESTORS}"), f"{path}: {policy!r}"
            else:
                assert "frame-ancestors 'none'" in policy, f"{path}: {policy!r}"
            assert "script-src 'self'" in policy or "default-src 'none'" in policy, path
            assert "unsafe-inline" not in policy.split("script-src")[-1].split(";")[0], path
    assert pages >= 30


def test_the_edge_pages_are_not_sniffed_or_framed(app: Flask) -> None:
    asgi = SightlineAsgi()
    asgi.start()

    async def scenario() -> list[Any]:
        try:
            return [await call(asgi, "GET", "/c/forged"), await call(asgi, "GET", "/o/x.gif")]
        finally:
            await asgi.stop()

    bad_link, pixel = asyncio.run(scenario())
    assert bad_link.status == 404 and bad_link.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in bad_link.headers["content-security-policy"]
    assert pixel.headers["x-content-type-options"] == "nosniff"
