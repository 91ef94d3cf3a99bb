"""CSRF: every state-changing request of a signed-in browser needs the session's token.

Enumerated from the URL map like tests/security/test_routes.py: for every rule
and every method but GET, a signed-in user's browser (a real session with a
real CSRF token of its own) sends the request the way another site would make
it, as a form post with no token, with another session's token, or with a
made-up one. Every one must be refused with 400 and change nothing. Routes
that no cookie authenticates are listed in `NOT_SESSION` with what protects
them instead, so a new form added tomorrow is checked tomorrow.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.integration.test_app_pages import csrf, signed_in
from tests.security.test_routes import Side, methods, path_of, rules, side, snapshot

pytestmark = pytest.mark.integration

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
# endpoint (or path prefix) → what authenticates it instead of a session cookie
NOT_SESSION = {
    "/api/": "a bearer token in the Authorization header, which another site cannot send",
    "/addons/gmail/": "Google's ID token of the add-on's service account, for the URL called "
    "(tests/integration/test_gmail_addon.py refuses every other caller with 401)",
    "viewer.beacon": "the signed visit token in the body; it records reading time, nothing else",
    "unsubscribe.unsubscribe": "RFC 8058 one-click: the mail client POSTs with no session by "
    "design; the sealed per-address token in the path is the proof, and it only opts that "
    "address out (tests/integration/test_unsubscribe.py refuses forged tokens)",
    "connect.callback": "Microsoft posts the OAuth answer (form_post) cross-site by design: "
    "it is only parked under a one-time id and the browser sent on (303) to a GET, where the "
    "flow's browser cookie and the starter's session are checked; nothing is saved before the "
    "confirm page's CSRF-protected POST",
}


@pytest.fixture
def teams(app: Flask) -> tuple[Side, Side]:
    return (
        side(app, "Team A", "rep@team-a.test", "dana@acme.test", "ALPHA"),
        side(app, "Team B", "rep@team-b.test", "fox@other.test", "BRAVO"),
    )


def session_authenticated(rule: Any) -> bool:
    return not any(
        rule.rule.startswith(key) if key.startswith("/") else rule.endpoint == key
        for key in NOT_SESSION
    )


def test_every_state_changing_route_refuses_a_request_without_the_sessions_token(
    app: Flask, teams: tuple[Side, Side]
) -> None:
    mine, theirs = teams
    browser = signed_in(app, mine.world.user_email)
    own_token = csrf(browser)
    other_token = csrf(signed_in(app, theirs.world.user_email))
    assert own_token != other_token
    before = snapshot()
    checked: list[str] = []
    for rule in rules(app):
        if not session_authenticated(rule):
            continue
        path = path_of(rule, mine.values())
        for method in methods(rule):
            if method not in STATE_CHANGING:
                continue
            for label, data, headers in (
                ("no token", {}, {}),
                ("another session's token", {"csrf_token": other_token}, {}),
                ("a made-up token", {"csrf_token": "x" * 43}, {}),
                ("another session's token as a header", {}, {"X-CSRF-Token": other_token}),
            ):
                response = browser.open(path, method=method, data=data, headers=headers)
                where = f"{method} {path} ({rule.endpoint}) with {label}"
                assert response.status_code == 400, (
                    f"{where}: {response.status_code} {response.get_data(as_text=True)[:200]}"
                )
                assert "came from another site" in response.get_data(as_text=True), where
            checked.append(f"{method} {rule.endpoint}")
    assert snapshot() == before, "a request without the session's CSRF token changed something"
    # Still signed in, and the real token still works: the refusals were CSRF, not sign-out.
    assert browser.get("/feed").status_code == 200
    assert len(checked) >= 25, checked  # 28 when this was written
    assert "POST auth.signin" in checked and "POST auth.signout" in checked


def test_the_sign_in_form_itself_needs_the_token(app: Flask, teams: tuple[Side, Side]) -> None:
    """Login CSRF: another site must not sign a visitor in to the attacker's account."""
    mine, _ = teams
    visitor = app.test_client()
    response = visitor.post(
        "/signin",
        data={"email": mine.world.user_email, "password": "correct horse battery staple"},
    )
    assert response.status_code == 400
    assert visitor.get("/feed").status_code == 302
