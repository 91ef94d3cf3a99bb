"""Chromium's own URL parser judges `web.redirects`: what it lets through stays on our origin.

Browsers decide where a Location goes, with rules (tab and newline removal,
``\\`` as ``/``, scheme-relative ``//``) that a server-side check can only
imitate. So a few thousand spellings (the security table plus every
combination of the tricky pieces) go through `is_safe_redirect_path`, and each
one it accepts is resolved by Chromium (`new URL(target, base)`) against our
origin: it must stay there. Then one real route end to end: a sign-in link
whose ``next`` points away ends on our origin.
"""

# Fullwidth solidi are the point of these tables.
# ruff: noqa: RUF001

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask

from config import Settings
from tests.browser.test_live_feed import browser  # noqa: F401
from tests.browser.test_viewer import start_web
from tests.conftest import create_user
from tests.security.test_redirects import BAD_TARGETS, GOOD_TARGETS
from web.redirects import is_safe_redirect_path

pytestmark = [pytest.mark.browser, pytest.mark.integration]

ORIGIN = "http://sightline.test"
PIECES = [
    "/", "\\", "\t", "\n", " ", ".", "..", "@", ":", "%2F", "%5C", "%09", "%2e",
    "／", "＼", "\u2028", "https:", "evil.example",
]  # fmt: skip
PASSWORD = "correct horse battery staple"


def spellings() -> list[str]:
    """The table, and every string of up to three pieces followed by a host."""
    made = set(BAD_TARGETS) | set(GOOD_TARGETS)
    for size in (1, 2, 3):
        for combo in itertools.product(PIECES, repeat=size):
            made.add("".join(combo) + "evil.example/x")
    return sorted(t for t in made if t and t.encode("utf-8", "replace").decode() == t)


def test_every_target_we_accept_stays_on_our_origin_in_chromium(browser: Any) -> None:  # noqa: F811
    page = browser.new_page()
    targets = spellings()
    origins: list[str | None] = page.evaluate(
        """([targets, base]) => targets.map(t => {
             try { return new URL(t, base).origin } catch (e) { return null }
           })""",
        [targets, f"{ORIGIN}/signin"],
    )
    accepted = [t for t in targets if is_safe_redirect_path(t)]
    escaped = [t for t, o in zip(targets, origins, strict=True) if o not in (ORIGIN, None)]
    leaks = [t for t, o in zip(targets, origins, strict=True) if t in accepted and o != ORIGIN]
    assert not leaks, f"accepted, yet Chromium leaves our origin for: {leaks[:10]}"
    assert set(GOOD_TARGETS) <= set(accepted)
    # The table is not toothless: Chromium would have followed many of them away.
    assert len(escaped) >= 200, len(escaped)
    print(f"{len(targets)} spellings, {len(accepted)} accepted, {len(escaped)} off-origin")


# One database is enough: the route itself is checked on both in tests/security.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_sign_in_link_pointing_away_ends_on_our_origin(
    browser: Any,  # noqa: F811
    env: Settings,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    app: Flask,
) -> None:
    create_user(app, "rep@redirect.test", "Redirects", "--password", PASSWORD)
    base, stack = start_web(env, database_url, redis_url, tmp_path)
    try:
        page = browser.new_context().new_page()
        for target in ("/\\evil.example", "/\t/evil.example", "//evil.example"):
            page.context.clear_cookies()
            answer = page.goto(f"{base}/signin?next={quote(target, safe='')}")
            assert answer is not None and answer.status == 400
            page.get_by_label("Email").fill("rep@redirect.test")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            # Wait for the answer's redirect to take the page off the form: right after
            # the click the form's own document is still "loaded" (CI once read /signin).
            page.wait_for_url(lambda url: not url.startswith(f"{base}/signin"), timeout=15_000)
            assert page.url == f"{base}/feed", (target, page.url)
    finally:
        stack.stop()
