"""The Account page in Chromium: name, signature, a new password, an API token made and revoked.

The Flask app is served on a thread. A rep created the README's way (no name)
opens their account from the header, gives a name and a signature (seen as
sent, scripts removed), changes the password and signs in with the new one in a
second browser, makes a token (shown once: gone on reload), uses it against the
API and revokes it (the API then answers 401). No script error and no Content
Security Policy violation on the page along the way.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from flask import Flask
from playwright.sync_api import expect
from sqlalchemy import select

from core.db import session_scope
from core.models import User
from tests.browser.test_live_feed import PASSWORD, browser  # noqa: F401
from tests.browser.test_unsubscribe_page import served  # noqa: F401
from tests.conftest import create_user

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REP = "riley@sellers.test"
NEW_PASSWORD = "a new and longer passphrase"


def sign_in(page: Any, base: str, password: str) -> None:
    page.goto(f"{base}/signin?next=/account")
    page.get_by_label("Email").fill(REP)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_rep_sets_up_their_account_and_manages_a_token(
    browser: Any,  # noqa: F811
    app: Flask,
    served: str,  # noqa: F811
) -> None:
    create_user(app, REP, "Sellers", "--password", PASSWORD)
    page = browser.new_context().new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    # A refused form's 422 is logged by Chromium as a failed load: only CSP matters here.
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    sign_in(page, served, PASSWORD)
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    expect(page.get_by_role("link", name=REP)).to_have_attribute("aria-current", "page")

    page.get_by_label("Name", exact=True).fill("Riley Rep")
    page.get_by_role("textbox", name="Signature").fill(
        "Riley Rep\nAcme <b>Sales</b><script>alert(1)</script>"
    )
    page.get_by_role("button", name="Save name and signature").click()
    expect(page.get_by_role("status").first).to_contain_text("Saved.")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Riley Rep")
    sent_as = page.frame_locator('iframe[title="Your signature as sent"]')
    expect(sent_as.locator("b")).to_have_text("Sales")
    expect(sent_as.locator("script")).to_have_count(0)

    page.get_by_label("Current password").fill("not my password")
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("alert")).to_contain_text("that is not your current password")
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status").first).to_contain_text("Password changed")
    # Another browser signs in with the new password (and no longer with the old one).
    other = browser.new_context().new_page()
    sign_in(other, served, PASSWORD)
    expect(other.get_by_role("alert")).to_contain_text("do not match an account")
    sign_in(other, served, NEW_PASSWORD)
    expect(other.get_by_role("heading", name="Your account")).to_be_visible()
    expect(other.locator("tr[data-device]")).to_have_count(2)  # both browsers

    # A name with a space: Playwright's has_text matches case-insensitive substrings, and
    # "CI" was found in another row's random token prefix ("sl_…ci…") once.
    page.get_by_label("Token name").fill("Deploy bot")
    page.get_by_role("button", name="Make a token").click()
    token = page.locator("#new-token").inner_text()
    assert re.fullmatch(r"sl_[A-Za-z0-9_-]{40,}", token)
    row = page.locator("tr[data-token]").filter(has_text="Deploy bot")
    expect(row).to_contain_text(token[:10])
    answer = requests.get(
        f"{served}/api/v1/account", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 200 and answer.json()["name"] == "Riley Rep"
    page.goto(f"{served}/account")  # shown once: not on the page any more
    expect(page.locator("#new-token")).to_have_count(0)
    assert token not in page.content()
    page.get_by_role("button", name="Revoke the token Deploy bot").click()
    expect(page.get_by_role("status").first).to_contain_text("Revoked Deploy bot")
    answer = requests.get(
        f"{served}/api/v1/account", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 401
    with session_scope() as session:
        assert session.scalars(select(User.name).where(User.email == REP)).one() == "Riley Rep"
    assert problems == []
