"""The unsubscribe link in Chromium: opening it changes nothing, the button does.

The Flask app is served on a thread (werkzeug's server: the page is all Flask,
no other process is needed). Chromium opens the link as a person would, under
the page's own Content-Security-Policy (no script, styles and the form's POST
from our origin only): the enrolment is still active and no cookie is set; the
button's POST opts the address out; a CSP violation would fail the test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from core.db import session_scope
from core.models import Enrollment
from core.tracking.tokens import unsubscribe_token
from tests.browser.test_live_feed import browser  # noqa: F401
from tests.integration.test_unsubscribe import world

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def state(enrollment_id: int) -> str:
    with session_scope() as session:
        return str(session.get_one(Enrollment, enrollment_id).state)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_opening_the_link_changes_nothing_and_the_button_unsubscribes(
    browser: Any,  # noqa: F811
    app: Flask,
    served: str,
) -> None:
    team_id, enrollment_id, email = world(app)
    context = browser.new_context()
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    answer = page.goto(f"{served}/u/{unsubscribe_token(team_id, email)}")
    assert answer is not None and answer.status == 200
    assert page.get_by_text(f"Unsubscribe {email}").is_visible()
    assert state(enrollment_id) == "active"

    page.get_by_role("button", name="Unsubscribe").click()
    # The answer's page, not the form's document still loaded right after the click.
    page.get_by_role("heading", name="You are unsubscribed").wait_for(timeout=15_000)
    assert state(enrollment_id) == "opted_out"
    assert context.cookies() == []
    assert violations == []
