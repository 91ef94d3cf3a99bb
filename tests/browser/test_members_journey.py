"""Inviting a teammate in Chromium, from the admin's click to the newcomer refused an admin page.

The Flask app is served on a thread; invitations go out through the real test
SMTP server (SIGHTLINE_SMTP_URL), which delivers into Dovecot, where the test
reads the link the newcomer would click. The admin and the newcomer are two
browser contexts (two people, two cookie jars). Along the way: the only admin
is refused leaving the team, a member gets the 403 page naming the admin, and
the admin's role change takes effect on the member's next request.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from flask import Flask
from playwright.sync_api import expect

from config import get_settings
from core.db import session_scope
from core.models import User
from tests.browser.test_live_feed import PASSWORD, browser  # noqa: F401
from tests.browser.test_unsubscribe_page import served  # noqa: F401
from tests.conftest import create_user
from tests.services.dovecot import DovecotServer
from tests.services.smtp import SmtpServer

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ADMIN = "ann@sellers.test"
NEWCOMER = "noor@sellers.test"
LINK = re.compile(r"https?://\S+/join/[A-Za-z0-9_-]+")


@pytest.fixture
def operator_smtp(smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    login = quote("sightline@ops.test")
    url = f"smtp://{login}:{quote(smtp_server.password)}@{smtp_server.host}:{smtp_server.port}"
    monkeypatch.setenv("SIGHTLINE_SMTP_URL", url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def sign_in(page: Any, base: str, email: str) -> None:
    page.goto(f"{base}/signin?next=/team/members")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_admin_invites_by_email_and_the_newcomer_joins_as_a_member(
    browser: Any,  # noqa: F811
    app: Flask,
    served: str,  # noqa: F811
    operator_smtp: None,
    dovecot: DovecotServer,
) -> None:
    create_user(app, ADMIN, "Sellers", "--password", PASSWORD, "--name", "Ann Admin")
    admin = browser.new_context().new_page()
    sign_in(admin, served, ADMIN)
    expect(admin.get_by_role("heading", name="Members of Sellers")).to_be_visible()

    admin.get_by_role("button", name="Leave the team").click()
    expect(admin.get_by_role("alert")).to_contain_text("the team's only admin and cannot leave")

    admin.get_by_label("Email address").fill(NEWCOMER)
    admin.get_by_role("button", name="Send invitation").click()
    expect(admin.get_by_role("status").first).to_contain_text(f"Invitation sent to {NEWCOMER}")
    expect(admin.locator(f'tr[data-invitation="{NEWCOMER}"]')).to_contain_text("pending")

    mail = dovecot.wait_for_message(NEWCOMER, lambda m: "Join Sellers" in str(m["Subject"]))
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    text = unicodedata.normalize("NFC", body.get_content())
    assert "Ann Admin (ann@sellers.test) invites you" in text
    found = LINK.search(text)
    assert found, text
    link = served + urlsplit(found.group(0)).path

    newcomer = browser.new_context().new_page()
    newcomer.goto(link)
    expect(newcomer.get_by_role("heading", name="Join Sellers on Sightline")).to_be_visible()
    newcomer.get_by_label("Your name").fill("Noor Newcomer")
    newcomer.get_by_label("Password", exact=True).fill(PASSWORD)
    newcomer.get_by_label("The same password again").fill(PASSWORD)
    newcomer.get_by_role("button", name="Join the team").click()
    expect(newcomer.locator(".who")).to_contain_text(NEWCOMER)  # signed in

    newcomer.goto(f"{served}/team/members")
    expect(newcomer.get_by_role("heading", name="Admins only")).to_be_visible()
    expect(newcomer.locator("ul.admins")).to_contain_text("Ann Admin <ann@sellers.test>")
    expect(newcomer.get_by_role("link", name="Members")).to_have_count(0)

    admin.goto(f"{served}/team/members")
    row = admin.locator(f'tr[data-member="{NEWCOMER}"]')
    expect(row).to_contain_text("Noor Newcomer")
    row.get_by_label(f"Role of {NEWCOMER}", exact=True).select_option("admin")
    row.get_by_role("button", name=f"Change the role of {NEWCOMER}").click()
    expect(admin.get_by_role("status").first).to_contain_text("Noor Newcomer is now an admin")

    newcomer.reload()
    expect(newcomer.get_by_role("heading", name="Members of Sellers")).to_be_visible()
    newcomer.goto(link)
    expect(newcomer.locator("main")).to_contain_text("This invitation was already used")
    with session_scope() as session:
        assert session.query(User).filter_by(email=NEWCOMER).one().role == "admin"
