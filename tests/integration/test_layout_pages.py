"""Error pages inside the layout, the favicon, and times written for the reader's zone.

Through the Flask test client, on SQLite and PostgreSQL: a page that does not
exist answers 404 inside the normal layout, with the navigation for a signed-in
user and a link to sign in for anyone else (a path under the API still answers
JSON); a wrong method and a crash get the same frame; `/favicon.ico` answers
with the icon every page links; a stored time is written as a `<time>` element
in UTC for static/time.js (tests/browser/test_layout.py shows it converted).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from core.db import session_scope
from core.models import Prospect
from tests.conftest import create_user
from tests.integration.test_app_pages import build_world, signed_in
from tests.integration.test_feed import PASSWORD

pytestmark = pytest.mark.integration

ICON = Path(__file__).resolve().parents[2] / "web" / "static" / "favicon.svg"
NAV = '<nav aria-label="Main">'


def test_a_missing_page_signed_out_offers_sign_in_and_the_api_keeps_json(
    client: FlaskClient,
) -> None:
    response = client.get("/no-such-page")
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert '<h1 id="error-title">Page not found</h1>' in html
    assert 'href="/signin"' in html and NAV not in html
    assert '<link rel="icon" href="/static/favicon.svg"' in html
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    # Under the API's prefix the answers stay JSON.
    response = client.get("/api/v1/no-such-resource")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    response = client.delete("/api/v1/openapi.json")
    assert response.status_code == 405 and response.is_json and "GET" in response.headers["Allow"]


def test_a_missing_page_signed_in_keeps_the_navigation(app: Flask) -> None:
    create_user(app, "rep@seller.test", "Sellers", "--password", PASSWORD)
    client = signed_in(app, "rep@seller.test")
    for path in ("/no-such-page", "/emails/999999"):
        response = client.get(path)
        assert response.status_code == 404, path
        html = response.get_data(as_text=True)
        assert NAV in html and 'href="/sequences"' in html and "Page not found" in html, path
        assert "Sign out" in html and 'class="signin-link"' not in html, path


def test_a_wrong_method_and_a_crash_get_the_same_frame(app: Flask) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False  # as in production: the handler answers

    def crash() -> str:
        raise RuntimeError("a bug")

    app.add_url_rule("/crash-for-test", view_func=crash)
    client = app.test_client()
    response = client.put("/signin")
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert 'id="error-title"' in response.get_data(as_text=True)
    response = client.get("/crash-for-test")
    assert response.status_code == 500
    html = response.get_data(as_text=True)
    assert "Something went wrong" in html and 'href="/signin"' in html
    assert "RuntimeError" not in html and "a bug" not in html


def test_the_favicon_answers_at_both_addresses(client: FlaskClient) -> None:
    for path in ("/favicon.ico", "/static/favicon.svg"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "image/svg+xml", path
        assert response.data == ICON.read_bytes(), path
    assert '<link rel="icon"' in client.get("/signin").get_data(as_text=True)


def test_times_are_written_in_utc_for_the_browser_to_convert(app: Flask) -> None:
    world = build_world(app, "Team A", "rep@team-a.test", "dana@acme.test", "ALPHA")
    with session_scope() as session:
        prospect = session.get_one(Prospect, world.prospect_id)
        prospect.created_at = datetime(2026, 12, 5, 23, 30, 15, tzinfo=UTC)
    client = signed_in(app, world.user_email)
    html = client.get("/prospects").get_data(as_text=True)
    assert (
        '<time datetime="2026-12-05T23:30:15Z" title="2026-12-05 23:30 UTC">'
        "Dec 5, 2026 23:30 UTC</time>"
    ) in html
    assert '<script src="/static/time.js" defer></script>' in html
    feed = client.get("/feed").get_data(as_text=True)
    times = re.findall(r'<time datetime="([^"]+)"', feed)
    assert times and all(t.endswith("Z") for t in times), times
