"""A quarantined message is visible: its mailbox's count and reason in the API and on the page.

A message the sync could not read in time is "kept, visible,
retried". Here it is kept (worker.sync.inbound.quarantine, as the sync keeps
it) and a person sees it: `quarantined` on the mailbox in the API,
`GET /api/v1/mailboxes/{id}/quarantine` with the reason and the next try, and
"1 message held back" with the reason on the mailboxes page. Other teams see
none of it, and a hostile subject is shown as text.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from flask import Flask
from sqlalchemy import select

from core.db import session_scope
from core.models import Mailbox
from tests.conftest import ApiClient
from tests.integration.test_app_pages import build_world, signed_in
from worker.sync.base import HeaderSummary
from worker.sync.inbound import MailboxRef, quarantine

pytestmark = pytest.mark.integration

REASON = "classification took longer than 1.5 s"


def hold(mailbox_id: int, n: int, *, subject: str = "Re: Intro", retry: bool = True) -> None:
    with session_scope() as session:
        box = session.get_one(Mailbox, mailbox_id)
        ref = MailboxRef(box.id, box.team_id, box.email)
        summary = HeaderSummary(
            provider_id=f"mid:<held.{n}@acme.test>",
            fetch_ref=f"1:{n}:INBOX",
            rfc_message_id=f"<held.{n}@acme.test>",
            from_addr="dana@acme.test",
            subject=subject,
            candidates=[],
            headers={},
        )
        quarantine(session, ref, summary, REASON, retry=retry, kind="quarantined")


def test_the_api_shows_the_count_and_each_message_with_its_reason(
    app: Flask, api: ApiClient
) -> None:
    assert api.get("/api/v1/mailboxes").get_json()["mailboxes"] == []
    world = build_world(app, "Team A", "rep@team-a.test", "p@acme.test", "secret-a")
    other = build_world(app, "Team B", "rep@team-b.test", "q@acme.test", "secret-b")
    hold(world.mailbox_id, 1)
    hold(world.mailbox_id, 2, retry=False)
    hold(other.mailbox_id, 3)

    listed = api.get("/api/v1/mailboxes").get_json()["mailboxes"]
    assert [(m["id"], m["quarantined"]) for m in listed] == [(world.mailbox_id, 2)]
    one = api.get(f"/api/v1/mailboxes/{world.mailbox_id}").get_json()
    assert one["quarantined"] == 2

    held = api.get(f"/api/v1/mailboxes/{world.mailbox_id}/quarantine").get_json()
    assert held["count"] == 2
    first, second = sorted(held["messages"], key=lambda m: m["id"])
    assert (first["reason"], first["tries"], first["from_addr"]) == (REASON, 1, "dana@acme.test")
    assert datetime.fromisoformat(first["next_try_at"]) > datetime.fromisoformat(
        first["held_since"]
    )
    assert first["summary"].startswith(f"{REASON}; 1 try so far, next after ")
    assert second["next_try_at"] is None
    assert second["summary"] == f"{REASON}; kept, not retried"

    # Another team's mailbox is not there to see.
    assert api.get(f"/api/v1/mailboxes/{other.mailbox_id}/quarantine").status_code == 404


def test_the_mailboxes_page_says_what_is_held_back_and_why(app: Flask) -> None:
    world = build_world(app, "Team A", "rep@team-a.test", "p@acme.test", "secret-a")
    other = build_world(app, "Team B", "rep@team-b.test", "q@acme.test", "secret-b")
    hostile = '<script>alert("x")</script> Re: Intro'
    hold(world.mailbox_id, 1, subject=hostile)
    hold(other.mailbox_id, 2, subject="Team B's held message")

    page = signed_in(app, "rep@team-a.test").get("/mailboxes").get_data(as_text=True)
    assert 'data-held="1"' in page
    assert "1\n            message held back" in page or "1 message held back" in " ".join(
        page.split()
    )
    assert f"{REASON}; 1 try so far, next after " in page
    assert "&lt;script&gt;alert(" in page and '<script>alert("x")' not in page
    assert "Team B&#39;s held message" not in page and "Team B's held message" not in page
    with session_scope() as session:
        ids = session.scalars(select(Mailbox.id)).all()
    assert sorted(ids) == sorted([world.mailbox_id, other.mailbox_id])
