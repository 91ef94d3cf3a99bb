"""No request can make Sightline redirect a browser to another site.

`web.redirects.safe_redirect_path` is the one check; this file drives it with a
table of spellings that browsers read as another host (or that a second decoder
would), first directly, then through every place a request names a target:

- sign-in's ``next`` (query and form): a bad target is refused with 400 before
  any password is looked at; a good one is followed;
- the connect API's ``return_to``: 422 naming the field;
- the OAuth confirm step: whatever a provider kind hands back to return to, the
  browser goes to a path on this site;
- every route of the app, enumerated from the URL map, signed out and signed
  in, with ``next`` and ``return_to`` in the query and the form: whatever answers
  a redirect points at this site.

tests/browser/test_redirects.py lets Chromium's own URL parser judge the table.
"""

# Fullwidth solidi are the point of these tables.
# ruff: noqa: RUF001

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import session_scope
from core.models import SignIn, User
from tests.conftest import ApiClient, create_user
from tests.integration.oauth_browsers import Browser, Callback
from tests.integration.test_app_pages import csrf, signed_in
from tests.integration.test_feed import PASSWORD, csrf_from
from tests.security.test_routes import Side, methods, path_of, rules, sides  # noqa: F401
from web import oauth_flow
from web.oauth_flow import Flow, Proposal, Saved
from web.redirects import is_safe_redirect_path, safe_redirect_path
from web.redirects import path_of as request_path_of

# Every one of these leaves this site, in some browser or after some decoder.
BAD_TARGETS = [
    "//evil.example",
    "///evil.example",
    "////evil.example",
    "/\\evil.example",
    "\\/evil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "\t//evil.example",
    " //evil.example",
    "/ /evil.example",
    "/\x00/evil.example",
    "/\x0b/evil.example",
    "/\u2028/evil.example",
    "/\u2029/evil.example",
    "/\u0085/evil.example",
    "https:evil.example",
    "https://evil.example",
    "http:/evil.example",
    "HTTPS://evil.example/",
    "javascript:alert(1)",
    "JavaScript:alert(document.domain)",
    "data:text/html,<script>alert(1)</script>",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%09/evil.example",
    "/%0A/evil.example",
    "/%0d%0aLocation:%20https://evil.example",
    "/%00/evil.example",
    "/%E2%80%A8/evil.example",
    "/%252F%252Fevil.example",
    "/%25252F%25252Fevil.example",
    "/%EF%BC%8F%EF%BC%8Fevil.example",
    "/%EF%BC%BCevil.example",
    "／／evil.example",
    "/／evil.example",
    "/＼evil.example",
    "／\\evil.example",
    "/.//evil.example",
    "/./evil.example",
    "/../evil.example",
    "/feed/..//evil.example",
    "/%2e%2e/%2fevil.example",
    "/%2e//evil.example",
    "/@evil.example",
    "/feed@evil.example",
    "/\\@evil.example",
    "@evil.example",
    "evil.example",
    ".evil.example",
    "feed",
    "/%ff",
    "/\ud800",
    "/" + "a" * 3000,
    "",
]
GOOD_TARGETS = [
    "/",
    "/feed",
    "/feed?kind=open",
    "/emails/3",
    "/prospects?q=acme%20corp",
    "/emails?to=dana@acme.test",
    "/sequences/",
    "/prospects/%C3%A9",
    "/mailboxes?message=Dana%27s%20mailbox%20is%20connected.",
]


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_a_target_that_can_leave_the_site_is_refused(target: str) -> None:
    assert not is_safe_redirect_path(target)
    assert safe_redirect_path(target, "/feed") == "/feed"


@pytest.mark.parametrize("target", GOOD_TARGETS)
def test_a_path_on_this_site_is_kept(target: str) -> None:
    assert safe_redirect_path(target, "/feed") == target


def test_a_requests_own_path_becomes_a_safe_target() -> None:
    assert request_path_of("/prospects/é", "q=josé&a=b".encode()) == (
        "/prospects/%C3%A9?q=jos%C3%A9&a=b"
    )
    assert is_safe_redirect_path(request_path_of("/prospects/é", "q=josé".encode()))


# -- through the routes -----------------------------------------------------------------

# What a browser can put in a URL at all (an unpaired surrogate cannot be encoded).
SENDABLE = [t for t in BAD_TARGETS if t and t.encode("utf-8", "replace").decode() == t]


@pytest.fixture
def rep(app: Flask) -> str:
    create_user(app, "rep@redirect.test", "Redirects", "--password", PASSWORD)
    return "rep@redirect.test"


def _sign_in(client: FlaskClient, target: str, *, in_query: bool) -> Any:
    token = csrf_from(client.get("/signin").get_data(as_text=True))
    fields = {"email": "rep@redirect.test", "password": PASSWORD, "csrf_token": token}
    if in_query:
        return client.post(f"/signin?next={quote(target, safe='')}", data=fields)
    return client.post("/signin", data={**fields, "next": target})


def test_sign_in_refuses_a_next_that_leaves_the_site_and_follows_one_that_does_not(
    app: Flask, rep: str
) -> None:
    for target in SENDABLE:
        client = app.test_client()
        page = client.get(f"/signin?next={quote(target, safe='')}")
        assert page.status_code == 400, repr(target)
        assert "outside Sightline" in page.get_data(as_text=True)
        assert 'name="next" value=""' in page.get_data(as_text=True)
        for in_query in (True, False):
            answer = _sign_in(client, target, in_query=in_query)
            assert answer.status_code == 400, (repr(target), in_query)
            assert "Location" not in answer.headers
            assert client.get("/feed").status_code == 302, "refused, so not signed in"
    with session_scope() as session:
        assert session.scalars(select(SignIn)).all() == []
    for target in GOOD_TARGETS:
        for in_query in (True, False):
            answer = _sign_in(app.test_client(), target, in_query=in_query)
            assert (answer.status_code, answer.headers["Location"]) == (302, target)


def test_a_signed_out_visitor_comes_back_to_the_page_they_asked_for(app: Flask, rep: str) -> None:
    client = app.test_client()
    asked = client.get("/prospects?q=jos%C3%A9")
    assert asked.status_code == 302
    signin = asked.headers["Location"]
    assert signin == "/signin?next=/prospects?q%3Djos%25C3%25A9"
    token = csrf_from(client.get(signin).get_data(as_text=True))
    answer = client.post(signin, data={"email": rep, "password": PASSWORD, "csrf_token": token})
    assert answer.headers["Location"] == "/prospects?q=jos%C3%A9"


def test_the_connect_api_refuses_a_return_to_that_leaves_the_site(api: ApiClient) -> None:
    for target in SENDABLE:
        answer = api.post("/api/v1/mailboxes/connect", {"kind": "gmail", "return_to": target})
        assert answer.status_code == 422, repr(target)
        assert "return_to" in answer.json["error"]["fields"], repr(target)


class _OffSiteKind:
    """A provider kind whose save names a page elsewhere. Ours never do (the mailbox kind
    checks its own return_to); the confirm step must not rely on every future kind."""

    label = "Elsewhere"
    start_again = "Start again."
    start_page = None

    def finish(self, flow: Flow, values: Any) -> Proposal:
        return Proposal("offsite", flow.team_id, flow.user_id, "Connect", "an account", "", {})

    def save(self, proposal: Proposal) -> Saved:
        return Saved("Connected.", "https://evil.example/landing")

    def discard(self, proposal: Proposal) -> None:
        return None


def test_the_oauth_confirm_step_sends_the_browser_only_to_this_site(
    app: Flask, rep: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(oauth_flow.KINDS, "offsite", _OffSiteKind())
    with session_scope() as session:
        user = session.scalars(select(User).where(User.email == rep)).one()
        team_id, user_id = user.team_id, user.id
    state = oauth_flow.new_state()
    with app.test_request_context():
        start = oauth_flow.begin(
            "offsite",
            state=state,
            team_id=team_id,
            user_id=user_id,
            consent_url="https://provider.example/consent",
            data={},
        )
    browser = Browser(app, rep)
    browser.open_start(start)
    confirm = browser.come_back(
        Callback("GET", f"/connect/offsite/callback?state={state}&code=c", {})
    )
    answer = browser.answer(confirm, "connect")
    assert (answer.status_code, answer.headers["Location"]) == (303, "/")


def _lands_here(location: str) -> bool:
    """A Location a browser resolves to this site (urljoin plus the WHATWG quirks)."""
    stripped = location.strip("\x00\x20").replace("\t", "").replace("\n", "").replace("\r", "")
    if stripped.startswith(("//", "/\\", "\\")) or "\\" in stripped:
        return False
    resolved = urlsplit(urljoin("http://localhost/", stripped))
    return resolved.scheme == "http" and resolved.netloc == "localhost"


# A handful of the table is enough per route: the table itself is checked above.
ROUTE_SPELLINGS = ["//evil.example", "/\\evil.example", "/\t/evil.example", "https:evil.example"]


def test_no_route_redirects_off_site_whatever_next_or_return_to_says(
    app: Flask,
    sides: tuple[Side, Side],  # noqa: F811
) -> None:
    mine, _ = sides
    signed = signed_in(app, mine.world.user_email)
    token = csrf(signed)
    callers: list[tuple[FlaskClient, dict[str, str]]] = [
        (app.test_client(), {}),
        (signed, {"csrf_token": token}),
    ]
    redirects = 0
    tried = 0
    for rule in rules(app):
        if rule.endpoint == "static":
            continue
        path = path_of(rule, mine.values())
        for method in methods(rule):
            if method not in ("GET", "POST"):
                continue
            for client, fields in callers:
                for target in ROUTE_SPELLINGS:
                    query = f"next={quote(target, safe='')}&return_to={quote(target, safe='')}"
                    data = {**fields, "next": target, "return_to": target}
                    answer = client.open(
                        f"{path}?{query}",
                        method=method,
                        data=data if method == "POST" else None,
                        headers={"Authorization": f"Bearer {mine.token}"}
                        if path.startswith("/api/")
                        else {},
                    )
                    tried += 1
                    location = answer.headers.get("Location")
                    if location is None:
                        continue
                    redirects += 1
                    assert _lands_here(location), (method, path, target, location)
    assert tried >= 500 and redirects >= 50


def test_a_host_header_cannot_make_werkzeugs_own_redirects_point_elsewhere(
    client: FlaskClient,
) -> None:
    for path, expected in (("/api/v1", "/api/v1/"), ("/static//app.css", "/static/app.css")):
        answer = client.get(path, headers={"Host": "evil.example"})
        assert answer.status_code in (301, 308), (path, answer.status_code)
        assert answer.headers["Location"] == expected
        assert _lands_here(answer.headers["Location"])
