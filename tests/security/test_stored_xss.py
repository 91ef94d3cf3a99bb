"""Stored XSS: names and text that users, prospects and uploads supply are shown, never run.

A team whose every name is hostile: the rep's name, the prospect's name, the
template, sequence and step subjects, the one-off email, the document's file
name (tests/security/test_routes.py's `side`, with the payload as its
"secret"), plus a prospect's reply whose text is hostile. Every HTML page of
the URL map, signed in, and the recipient's document viewer must show the
payload as text (escaped) and never as markup. tests/browser/test_stored_xss.py
opens the same pages in Chromium and checks that nothing ran.
"""

from __future__ import annotations

import pytest
from flask import Flask

from core.db import session_scope
from core.documents.tokens import link_token
from core.events import natural_key, record_event
from core.models import InboundMessage
from tests.integration.test_app_pages import signed_in
from tests.security.test_routes import Side, path_of, rules, side

pytestmark = pytest.mark.integration

PAYLOAD = "'\"><img src=x onerror=window.__xss=2><script>window.__xss=1</script>"
# What must never reach a page as markup, and how it reads once escaped.
RAW = ("<img src=x onerror", "<script>window.__xss")
ESCAPED = "&lt;script&gt;window.__xss=1&lt;/script&gt;"
REPLY_TEXT = "Sounds good <script>window.__xss=3</script><svg onload=window.__xss=4>"


def hostile_team(app: Flask) -> Side:
    team = side(app, "Team X", "rep@hostile.test", "dana@hostile.test", PAYLOAD)
    w = team.world
    with session_scope() as session:
        inbound = InboundMessage(
            team_id=w.team_id,
            mailbox_id=w.mailbox_id,
            provider_id="hostile-1",
            rfc_message_id="<hostile@x>",
            sent_message_id=w.sent_id,
            kind="reply",
            from_addr="dana@hostile.test",
            subject=PAYLOAD,
            text=REPLY_TEXT,
        )
        session.add(inbound)
        session.flush()
        record_event(
            session,
            team_id=w.team_id,
            key=natural_key("reply", w.sent_id, "<hostile@x>"),
            kind="reply",
            sent_message_id=w.sent_id,
            enrollment_id=w.enrollment_id,
            prospect_id=w.prospect_id,
            inbound_message_id=inbound.id,
            data={
                "recipient": 0,
                "from": "dana@hostile.test",
                "text": REPLY_TEXT,
                "subject": PAYLOAD,
            },
        )
    return team


def viewer_path(team: Side) -> str:
    return f"/d/{link_token(team.link_id, team.document_id, team.world.sent_id, 0)}"


def assert_inert(path: str, html: str) -> None:
    for raw in RAW:
        assert raw not in html, f"{path} shows {raw!r} as markup"
    for raw in ("<script>window.__xss=3", "<svg onload"):
        assert raw not in html, f"{path} shows the reply's {raw!r} as markup"


def test_no_page_shows_a_stored_name_or_text_as_markup(app: Flask) -> None:
    team = hostile_team(app)
    client = signed_in(app, team.world.user_email)
    pages, escaped, reply_shown = 0, 0, 0
    for rule in rules(app):
        if "GET" not in rule.methods:
            continue
        path = path_of(rule, team.values())
        response = client.get(path)
        if response.mimetype != "text/html":
            continue
        html = response.get_data(as_text=True)
        assert_inert(path, html)
        pages += 1
        escaped += ESCAPED in html
        reply_shown += "Sounds good &lt;script&gt;window.__xss=3&lt;/script&gt;" in html
    assert pages >= 30
    assert escaped >= 10, "the payload should be on many pages, escaped"
    assert reply_shown >= 1, "the reply's text should be on the prospect's timeline, escaped"


def test_the_recipients_viewer_shows_a_hostile_file_name_as_text(app: Flask) -> None:
    team = hostile_team(app)
    response = app.test_client().get(viewer_path(team))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert_inert("/d/<token>", html)
    assert "<title>Deck &#39;&#34;&gt;&lt;img src=x onerror=window.__xss=2&gt;" in html


def test_the_live_feed_shows_a_hostile_reply_as_text(app: Flask) -> None:
    team = hostile_team(app)
    client = signed_in(app, team.world.user_email)
    html = client.get("/feed").get_data(as_text=True)
    assert_inert("/feed", html)
    assert "Dana &#39;&#34;&gt;&lt;img src=x onerror=window.__xss=2&gt;" in html  # the prospect
    assert "Intro Dana" in html and ESCAPED in html  # the subject
