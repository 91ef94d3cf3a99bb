"""Document events in the Live Feed: one item per reading visit, and downloads.

The events are recorded the way `web.documents.visits` records them (same
kinds, same data), then read through the page, the JSON and the live stream
of the real `web` process. Names and file names are user input: they must
reach the page escaped and the stream as plain JSON strings.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import update

from core.db import session_scope
from core.events import record_event
from core.models import Prospect
from tests.integration.test_events_worker import Sent
from tests.integration.test_feed import (
    EventStream,
    add_event,
    data,
    http_sign_in,
    sign_in,
    teams,
    web,
)

pytestmark = pytest.mark.integration

__all__ = ["teams", "web"]  # fixtures, used by name

HOSTILE_NAME = 'Dana <img src=x onerror="alert(1)">'
HOSTILE_FILE = "<script>alert('pdf')</script>.pdf"


def document_event(
    sent: Sent,
    kind: str,
    key: str,
    *,
    name: str = "pricing.pdf",
    prospect: bool = True,
    **extra: Any,
) -> int:
    """An event with the data `web.documents.visits._record` stores."""
    payload = {
        "document_id": 7,
        "document": name,
        "visit_id": 1,
        "link_id": 1,
        "pages": 12,
        "recipient": "dana@acme.test",
        **extra,
    }
    with session_scope() as session:
        event_id = record_event(
            session,
            team_id=sent.team_id,
            key=key,
            kind=kind,
            sent_message_id=sent.id,
            enrollment_id=sent.enrollment_id,
            prospect_id=sent_prospect(sent) if prospect else None,
            data=payload,
        )
    assert event_id is not None
    return event_id


def sent_prospect(sent: Sent) -> int:
    from core.models import SentMessage

    with session_scope() as session:
        prospect_id = session.get_one(SentMessage, sent.id).prospect_id
    assert prospect_id is not None
    return prospect_id


def test_document_events_say_who_opened_what_and_a_visit_is_one_item(
    client: FlaskClient, teams: tuple[Sent, Sent]
) -> None:
    a, b = teams
    add_event(a, "sent", "sent:a", subject="Hello Dana")
    document_event(a, "document_view", "document_view:1", page=1)
    document_event(a, "document_page", "document_page:1:4", page=4)
    document_event(a, "document_download", "document_download:1")
    document_event(b, "document_view", "document_view:2", page=1)
    sign_in(client, "owner@team-a.test")
    items = data(client.get("/feed/items"))["items"]
    # The page event is folded into its visit's item (here a visit with no row: its
    # first words); no item of its own.
    assert [(i["kind"], i["label"], i["text"]) for i in items] == [
        ("document_download", "Downloaded a document", "Dana Scully downloaded pricing.pdf"),
        ("document_view", "Read a document", "Dana Scully opened pricing.pdf"),
        ("sent", "Sent", None),
    ]
    assert items[1]["document"] == {
        "id": 7,
        "name": "pricing.pdf",
        "page": 1,
        "pages": 12,
        "visit": None,
    }
    assert items[2]["document"] is None
    assert items[1]["subject"] == "Hello Dana"

    page = client.get("/feed").get_data(as_text=True)
    feed = page.split('id="feed"', 1)[1]
    assert "Dana Scully opened pricing.pdf" in feed and "now on page" not in feed
    assert "Dana Scully downloaded pricing.pdf" in feed
    # The filter offers the document kinds, in words.
    assert 'value="document_view"' in page and "> document reading</label>" in page
    assert 'value="document_page"' not in page


def test_the_kind_filter_picks_document_events(
    client: FlaskClient, teams: tuple[Sent, Sent]
) -> None:
    a, _ = teams
    add_event(a, "open", "open:a", hit_class="person")
    document_event(a, "document_view", "document_view:1", page=1)
    document_event(a, "document_page", "document_page:1:2", page=2)
    document_event(a, "document_page", "document_page:1:3", page=3)
    document_event(a, "document_download", "document_download:1")
    sign_in(client, "owner@team-a.test")
    opened = data(client.get("/feed/items?kind=document_view,document_download"))["items"]
    assert [i["kind"] for i in opened] == ["document_download", "document_view"]
    html = client.get("/feed?kind=document_view").get_data(as_text=True).split('id="feed"', 1)[1]
    assert "Dana Scully opened pricing.pdf" in html and "now on page" not in html
    assert "downloaded" not in html and "Opened</span>" not in html
    for bad_kind in ("document", "document_page"):  # pages are part of their visit's item
        bad = client.get(f"/feed/items?kind={bad_kind}")
        assert bad.status_code == 422
        assert "document_view" in data(bad)["error"]["message"]  # the message lists the kinds


def test_names_and_file_names_are_escaped_and_a_missing_prospect_falls_back_to_the_address(
    client: FlaskClient, teams: tuple[Sent, Sent]
) -> None:
    a, _ = teams
    with session_scope() as session:
        session.execute(
            update(Prospect).where(Prospect.id == sent_prospect(a)).values(name=HOSTILE_NAME)
        )
    document_event(a, "document_view", "document_view:1", name=HOSTILE_FILE, page=1)
    document_event(a, "document_download", "document_download:9", prospect=False)
    sign_in(client, "owner@team-a.test")
    page = client.get("/feed").get_data(as_text=True)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#39;pdf&#39;)&lt;/script&gt;.pdf" in page
    assert "Dana &lt;img src=x onerror=&#34;alert(1)&#34;&gt; opened" in page
    assert "dana@acme.test downloaded pricing.pdf" in page
    items = data(client.get("/feed/items"))["items"]
    assert items[1]["text"] == f"{HOSTILE_NAME} opened {HOSTILE_FILE}"
    assert items[1]["document"]["name"] == HOSTILE_FILE


def test_document_events_reach_the_live_stream_with_their_words(
    web: str, teams: tuple[Sent, Sent]
) -> None:
    a, _ = teams
    alice = http_sign_in(web, "owner@team-a.test")
    bob = http_sign_in(web, "owner@team-b.test")
    everything = EventStream(alice, f"{web}/feed/stream")
    documents_only = EventStream(alice, f"{web}/feed/stream?kind=document_view")
    other_team = EventStream(bob, f"{web}/feed/stream")
    try:
        time.sleep(0.5)  # all connected and listening
        document_event(a, "document_view", "document_view:1", name=HOSTILE_FILE, page=1)
        document_event(a, "document_page", "document_page:1:4", name=HOSTILE_FILE, page=4)
        _, first = everything.items.get(timeout=5)
        assert (first["kind"], first["text"]) == (
            "document_view",
            f"Dana Scully opened {HOSTILE_FILE}",
        )
        assert "team_id" not in first
        _, mine = documents_only.items.get(timeout=5)
        assert mine["id"] == first["id"]
        time.sleep(1)  # time enough for a wrongly sent item (the page event) to arrive
        assert everything.items.empty() and documents_only.items.empty()
        assert other_team.items.empty()
    finally:
        for stream in (everything, documents_only, other_team):
            stream.close()
