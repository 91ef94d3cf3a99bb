"""Folders a mailbox never reads, in Chromium: shown on the Mailboxes page, typed, refused.

The Flask app is served on a thread (the page is all Flask). The person opens
"Folders not read", types names, saves, reads the refusal of a bad one, and
goes back to the default.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import expect

from core.db import session_scope
from core.models import Mailbox
from tests.browser.test_live_feed import PASSWORD, browser  # noqa: F401
from tests.browser.test_unsubscribe_page import served  # noqa: F401
from tests.conftest import create_user
from tests.integration.test_pacing import make_team

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def _skip(mailbox_id: int) -> list[str] | None:
    with session_scope() as session:
        return session.get_one(Mailbox, mailbox_id).skip_folders


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_mailboxes_page_names_the_folders_not_read_and_saves_new_ones(
    browser: Any,  # noqa: F811
    app: Flask,
    served: str,  # noqa: F811
) -> None:
    _, mailbox_id, _ = make_team()
    create_user(app, "ann@seller.test", "Sales", "--password", PASSWORD)
    page = browser.new_context().new_page()
    page.goto(f"{served}/signin?next=/mailboxes")
    page.get_by_label("Email").fill("ann@seller.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    row = page.locator(f"#mailbox-{mailbox_id}")
    summary = row.locator(".skip-folders summary")
    expect(summary).to_have_text("Folders not read: Sent, Drafts, Trash, Junk")
    summary.click()
    field = row.get_by_label("Folders not read for replies")
    field.fill("Sent, Drafts, Trash, Junk, Newsletters")
    row.get_by_role("button", name="Save folders").click()
    expect(page.get_by_role("status").first).to_contain_text(
        "does not read: Sent, Drafts, Trash, Junk, Newsletters."
    )
    assert _skip(mailbox_id) == ["Sent", "Drafts", "Trash", "Junk", "Newsletters"]

    page.locator(f"#mailbox-{mailbox_id} .skip-folders summary").click()
    page.locator(f"#mailbox-{mailbox_id}").get_by_label("Folders not read for replies").fill(
        "Sent, Junk, Receipts\tOld"
    )
    page.locator(f"#mailbox-{mailbox_id}").get_by_role("button", name="Save folders").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "were not saved: a folder name can't contain control characters (tabs, line breaks)."
    )
    assert _skip(mailbox_id) == ["Sent", "Drafts", "Trash", "Junk", "Newsletters"]

    page.locator(f"#mailbox-{mailbox_id} .skip-folders summary").click()
    page.locator(f"#mailbox-{mailbox_id}").get_by_role("button", name="Use the default").click()
    expect(page.locator(f"#mailbox-{mailbox_id} .skip-folders summary")).to_have_text(
        "Folders not read: Sent, Drafts, Trash, Junk"
    )
    assert _skip(mailbox_id) is None
