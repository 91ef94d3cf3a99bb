"""The Gmail add-on's cards, answered to Google's events, drawn in Chromium: artifacts/gmail-*.png.

Gmail draws cards itself, so there is no page of ours to test in a browser; this
asks the real endpoints for each card (Google's events, signed ID tokens, the
schema check: tests/integration/gmail_addon_support.py), draws the card JSON
with a small renderer (tests/browser/gmail_card_html.py) and captures it, so a
reviewer sees what a rep sees in Gmail's side panel. It also checks what
the drawing shows: the person, their sequence and its buttons, no widget the
renderer did not know.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from core.db import session_scope
from core.models import Team
from tests.browser.gmail_card_html import card_html
from tests.integration.gmail_addon_support import (
    BASE,
    Google,
    google,
    google_server,
    the_card,
    walk,
    world,
)
from tests.services.process import in_ci

pytestmark = pytest.mark.browser
__all__ = ["google", "google_server"]  # fixtures, imported for pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "artifacts"
LOGO = Path(__file__).resolve().parents[2] / "web" / "static" / "gmail-addon-logo.png"


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: run scripts/test-prereqs.sh browser"
        if in_ci():
            pytest.fail(message + " (CI is set: a missing browser fails, never skips)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        context = chromium.new_context(viewport={"width": 340, "height": 520})
        yield context.new_page()
        chromium.close()


def capture(page: Any, name: str, card: dict[str, Any], notification: str = "") -> str:
    logo = "data:image/png;base64," + base64.b64encode(LOGO.read_bytes()).decode()
    page.set_content(card_html(card, logo_url=logo, notification=notification))
    assert page.locator(".unknown").count() == 0, f"{name}: a widget the renderer cannot draw"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"gmail-{name}.png"), full_page=True)
    shown: str = page.locator(".panel").inner_text()
    return shown


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_card_drawn_as_gmail_shows_it(google: Google, app: Flask, page: Any) -> None:
    w = world(app)
    thread = {"toRecipients": [w.prospect, "walter@acme.test"]}

    homepage = the_card(google.card_answer(BASE + "/homepage"))
    assert "Latest activity" in capture(page, "homepage", homepage)

    message = the_card(google.card_answer(BASE + "/message", gmail=thread))
    shown = capture(page, "message", message)
    assert "Dana Scully <dana@acme.test>" in shown and "Intro to Acme" in shown
    assert "Pause" in shown and "Stop" in shown and "Add to sequence…" in shown

    choose = next(n["card"] for n in walk(message) if isinstance(n.get("card"), dict))
    assert "Add" in capture(page, "add-to-sequence", choose)

    paused = google.press(message, "Pause")
    notice = paused["renderActions"]["action"]["notification"]["text"]
    assert "Resume" in capture(page, "message-paused", the_card(paused), notice)

    compose = the_card(google.card_answer(BASE + "/compose", gmail={"toRecipients": [w.prospect]}))
    assert "pricing.pdf" in capture(page, "compose", compose)

    with session_scope() as session:
        session.get_one(Team, w.team_id).plan = "solo"
    solo = the_card(google.card_answer(BASE + "/compose", gmail={"toRecipients": [w.prospect]}))
    assert "Team plan" in capture(page, "compose-solo", solo)

    stranger = google.card_answer(BASE + "/homepage", user_email="newhire@team-a.test")
    assert "invite newhire@team-a.test" in capture(page, "no-account", the_card(stranger))
