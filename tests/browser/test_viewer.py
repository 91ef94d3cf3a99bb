"""The document viewer and the content library in headless Chromium (Debian's, via Playwright).

The Procfile's `web` process serves a real PDF processed by the real pipeline.
A prospect (another browser, another address) opens their link, pages through
with the keyboard, waits, downloads, leaves: the page times they spent are
what the database holds, within a second. An expired link shows its page; the
signed-in sender's own browser is recorded as `self`; at phone width the page
fits and a swipe turns it. In the library, an uploaded PowerPoint file shows
its conversion progress until it is ready. Screenshots go to artifacts/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from config import Settings
from core.db import session_scope
from core.models import DocumentLink, DocumentPageView, DocumentVisit, Event, utcnow
from tests.browser.test_live_feed import ARTIFACTS, CHROMIUM, CHROMIUM_FLAGS, PROSPECT_UA
from tests.conftest import service_environment
from tests.fixtures.documents import samples
from tests.integration.test_documents_viewer import PASSWORD, Shared, share
from tests.services import process
from tests.services.process import in_ci
from tests.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# One database is enough here: the server side runs on both in tests/integration.
on_postgresql = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
PROSPECT = {"user_agent": PROSPECT_UA, "extra_http_headers": {"X-Forwarded-For": "203.0.113.77"}}


@pytest.fixture
def browser() -> Iterator[Any]:
    import os

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
        yield chromium
        chromium.close()


def start_web(
    env: Settings, database_url: str, redis_url: str, tmp_path: Path, *names: str
) -> tuple[str, Stack]:
    port = process.free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {
        **service_environment(database_url, redis_url, env.var_dir),
        "PORT": str(port),
        "PUBLIC_BASE_URL": base,
        "WEB_CONCURRENCY": "1",
    }
    stack = Stack(environment, tmp_path / "logs").start("web", *names)

    def answers() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    stack.wait_for("the web process", answers, timeout=30)
    return base, stack


@pytest.fixture
def web(
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    app: Flask,
    client: FlaskClient,
) -> Iterator[tuple[str, Shared]]:
    shared = share(app, client, pages=5)
    base, stack = start_web(env, database_url, redis_url, tmp_path)
    yield base, shared
    stack.stop()


def wait_until(what: str, check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def seconds_by_page() -> dict[int, float]:
    with session_scope() as session:
        rows = session.execute(select(DocumentPageView.page, DocumentPageView.ms))
        return {int(page): int(ms) / 1000 for page, ms in rows}


def sign_in(page: Any, base: str) -> None:
    page.goto(f"{base}/signin")
    page.get_by_label("Email").fill("rep@seller.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/feed")


@on_postgresql
def test_a_prospect_pages_through_and_the_time_on_each_page_is_recorded(
    browser: Any, web: tuple[str, Shared]
) -> None:
    from playwright.sync_api import expect

    base, shared = web
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(accept_downloads=True, **PROSPECT)
    page = context.new_page()
    response = page.goto(f"{base}/d/{shared.token}")
    assert response is not None and response.status == 200
    first = page.locator("#page-1 img")
    expect(first).to_be_visible()
    wait_until("page 1's image", lambda: first.evaluate("img => img.naturalWidth") > 0)
    expect(page.locator("#current")).to_have_text("1")
    page.screenshot(path=str(ARTIFACTS / "viewer-desktop.png"))

    time.sleep(2.0)  # reading page 1
    page.keyboard.press("ArrowRight")
    expect(page.locator("#current")).to_have_text("2")
    time.sleep(3.0)  # reading page 2
    page.keyboard.press("ArrowRight")
    expect(page.locator("#current")).to_have_text("3")
    time.sleep(1.5)
    with page.expect_download() as download_info:
        page.locator("#download").click()
    download = download_info.value
    assert download.suggested_filename == "pricing.pdf"
    assert Path(download.path()).read_bytes() == shared.original
    page.goto("about:blank")  # leaving: pagehide sends the last report with sendBeacon

    seconds = wait_until("the last report", lambda: (s := seconds_by_page()).get(3, 0) >= 1.2 and s)
    assert 1.5 <= seconds[1] <= 3.5, seconds
    assert 2.5 <= seconds[2] <= 4.5, seconds
    assert 1.2 <= seconds[3] <= 3.5, seconds
    assert not {4, 5} & {p for p, s in seconds.items() if s > 0.5}, seconds
    with session_scope() as session:
        visit = session.scalars(select(DocumentVisit)).one()
        assert (visit.hit_class, visit.pages_seen) == ("person", 3)
        assert visit.downloaded_at is not None
        kinds = [e.kind for e in session.scalars(select(Event).order_by(Event.id))]
    assert kinds[0] == "document_view"
    assert {"document_page", "document_download"} <= set(kinds)
    context.close()


@on_postgresql
def test_an_expired_link_shows_a_clear_page(browser: Any, web: tuple[str, Shared]) -> None:
    from playwright.sync_api import expect

    base, shared = web
    with session_scope() as session:
        session.execute(update(DocumentLink).values(expires_at=utcnow() - timedelta(hours=2)))
    page = browser.new_context(**PROSPECT).new_page()
    response = page.goto(f"{base}/d/{shared.token}")
    assert response is not None and response.status == 410
    expect(page.get_by_role("heading", name="Link expired")).to_be_visible()
    expect(page.locator("body")).to_contain_text("ask for a new link")
    page.screenshot(path=str(ARTIFACTS / "viewer-expired.png"))
    with session_scope() as session:
        assert session.scalars(select(DocumentVisit)).all() == []


@on_postgresql
def test_the_signed_in_senders_view_is_recorded_as_self(
    browser: Any, web: tuple[str, Shared]
) -> None:
    from playwright.sync_api import expect

    base, shared = web
    page = browser.new_context().new_page()
    sign_in(page, base)
    page.goto(f"{base}/d/{shared.token}")
    expect(page.locator(".own-device")).to_be_visible()
    time.sleep(1.6)
    page.goto("about:blank")
    wait_until("the sender's report", lambda: seconds_by_page().get(1, 0) > 0.5)
    with session_scope() as session:
        visit = session.scalars(select(DocumentVisit)).one()
        assert (visit.hit_class, visit.reason) == ("self", "device cookie")
        assert session.scalars(select(Event)).all() == []


@on_postgresql
def test_at_phone_width_the_page_fits_and_a_swipe_turns_it(
    browser: Any, web: tuple[str, Shared]
) -> None:
    from playwright.sync_api import expect

    base, shared = web
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True, **PROSPECT
    )
    page = context.new_page()
    page.goto(f"{base}/d/{shared.token}")
    first = page.locator("#page-1 img")
    expect(first).to_be_visible()
    box = first.bounding_box()
    assert box is not None and box["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "viewer-mobile.png"))
    cdp = context.new_cdp_session(page)
    for kind, x in (("touchStart", 320), ("touchMove", 200), ("touchMove", 60), ("touchEnd", 60)):
        points = [] if kind == "touchEnd" else [{"x": x, "y": 400}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
    expect(page.locator("#current")).to_have_text("2")
    context.close()


@on_postgresql
def test_the_library_shows_conversion_progress_until_the_document_is_ready(
    browser: Any,
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    app: Flask,
    client: FlaskClient,
) -> None:
    from playwright.sync_api import expect

    share(app, client, pages=1)  # the team, its user, one document already there
    deck = tmp_path / "quarterly-review.pptx"
    deck.write_bytes(samples.office_bytes("pptx", 4, tmp_path / "deck"))
    base, stack = start_web(env, database_url, redis_url, tmp_path, "documents")
    try:
        page = browser.new_context().new_page()
        sign_in(page, base)
        page.goto(f"{base}/documents")
        page.get_by_label("Upload a document").set_input_files(str(deck))
        page.get_by_role("button", name="Upload", exact=True).click()
        expect(page.get_by_role("heading", name="quarterly-review.pptx")).to_be_visible()
        status = page.locator(".status-cell .status")
        # LibreOffice needs a second or two: the page shows where it is meanwhile.
        expect(status).to_have_text(re.compile("Waiting to start|Converting to PDF|Rendering"))
        expect(page.locator(".status-cell progress")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "library-converting.png"))
        expect(status).to_have_text("Ready", timeout=30_000)
        expect(page.locator(".thumbs img")).to_have_count(4)
        page.screenshot(path=str(ARTIFACTS / "library-document.png"), full_page=True)
        page.goto(f"{base}/documents")
        expect(page.locator("table.documents tbody tr")).to_have_count(2)
        page.screenshot(path=str(ARTIFACTS / "library.png"), full_page=True)
    finally:
        stack.stop()
