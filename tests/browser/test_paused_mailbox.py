"""A paused mailbox in Chromium: the Mailboxes page says why, and its button resumes sending.

The Flask app is served on a thread (the page is all Flask). The bounce guard's
pause is made by its own function (`pause_mailbox`) and a paused sequence is
its row; the person signs in, reads the reasons, and clicks "Resume sending".
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect

from core.db import session_scope
from core.models import Mailbox, SequencePause, utcnow
from tests.browser.test_live_feed import PASSWORD, browser  # noqa: F401
from tests.browser.test_unsubscribe_page import served  # noqa: F401
from tests.conftest import create_user
from tests.integration.test_pacing import make_team
from worker.sequences.pacing import pause_mailbox

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REASON = "bounce guard: 5 of the last 50 sends hard-bounced (10 %, above 8 %)"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_mailboxes_page_shows_the_pause_and_its_button_resumes_sending(
    browser: Any,  # noqa: F811
    app: Flask,
    served: str,  # noqa: F811
) -> None:
    team_id, mailbox_id, sequence_id = make_team()
    with session_scope() as session:
        pause_mailbox(session, mailbox_id, REASON, utcnow(), None)
        session.add(SequencePause(sequence_id=sequence_id, team_id=team_id, reason=REASON))
    create_user(app, "ann@seller.test", "Sales", "--password", PASSWORD)
    page = browser.new_context().new_page()
    page.goto(f"{served}/signin?next=/mailboxes")
    page.get_by_label("Email").fill("ann@seller.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    row = page.locator(f"#mailbox-{mailbox_id}")
    expect(row.locator(".paused")).to_contain_text(f"Sending paused until resumed: {REASON}")
    expect(page.locator(f"#paused-sequence-{sequence_id}")).to_contain_text(REASON)

    row.get_by_role("button", name="Resume sending").click()
    expect(page.get_by_role("status").first).to_contain_text("sends again")
    expect(page.locator(f"#mailbox-{mailbox_id} .paused")).to_have_count(0)
    with session_scope() as session:
        assert session.get_one(Mailbox, mailbox_id).paused_at is None
