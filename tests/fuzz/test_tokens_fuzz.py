"""Fuzzing every signed token: forged, damaged or misused tokens read as None, never raise.

Tokens: tracking opens and clicks and the device cookie (`core.tracking.tokens`),
document links and visits (`core.documents.tokens`), and the generic signer
(`core.tokens`). Properties:

- anything a third party can send (arbitrary text, real tokens with a character
  changed, real tokens of another purpose) reads as None, or, for a change that
  base64 ignores, as the very same payload;
- a payload signed with our key but of the wrong shape (floats, booleans,
  negative or nested values, non-http destinations) reads as None;
- the click endpoint redirects only to an http(s) URL signed into the token,
  as one ASCII header line (no header injection), and answers 404 to the rest.
"""

from __future__ import annotations

import asyncio
import string
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from config import Settings
from core import tokens as core_tokens
from core.documents import tokens as document_tokens
from core.tracking import tokens as tracking
from tests.fuzz.profiles import fuzz
from tests.integration.test_tracking_edge import call
from web.tracking.app import SightlineAsgi, safe_location

ids = st.integers(min_value=0, max_value=2**63)


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """Tokens need the settings and Redis, not a second database engine."""
    return sqlite_database_url


token_text = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=300),
)
READERS = [
    tracking.read_open_token,
    tracking.read_click_token,
    tracking.read_device_cookie,
    document_tokens.read_link_token,
    document_tokens.read_visit_token,
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=7) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)


@fuzz(300)
@given(token_text)
def test_arbitrary_text_is_never_a_token(env: Settings, text: str) -> None:
    for read in READERS:
        assert read(text) is None
    assert core_tokens.unsign("document.link", text) is None


@fuzz(200)
@given(ids, ids, st.integers(0, 50), ids, st.data())
def test_a_damaged_token_reads_as_none_or_unchanged(
    env: Settings, sent: int, team: int, recipient: int, issued: int, data: st.DataObject
) -> None:
    token = tracking.open_token(sent, team, recipient, issued)
    original = tracking.read_open_token(token)
    assert original == tracking.OpenToken(sent, team, recipient, issued)
    at = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from(string.ascii_letters + string.digits + "-_."))
    assume(replacement != token[at])
    damaged = token[:at] + replacement + token[at + 1 :]
    assert tracking.read_open_token(damaged) in (None, original)
    # A token of one purpose is never accepted for another.
    assert tracking.read_click_token(token) is None
    assert document_tokens.read_link_token(token) is None
    assert tracking.read_device_cookie(token) is None


@fuzz(300)
@given(json_values)
def test_signed_payloads_of_the_wrong_shape_are_refused(env: Settings, payload: Any) -> None:
    from itsdangerous import URLSafeSerializer

    key = env.secret_key

    def signed(salt: str) -> str:
        return str(URLSafeSerializer(key, salt=salt).dumps(payload))

    opened = tracking.read_open_token(signed(tracking.OPEN_SALT))
    if opened is not None:
        values = [opened.sent_message_id, opened.team_id, opened.recipient, opened.issued_at]
        assert all(type(v) is int and v >= 0 for v in values)
    clicked = tracking.read_click_token(signed(tracking.CLICK_SALT))
    if clicked is not None:
        assert clicked.url.lower().startswith(("http://", "https://"))
    device = tracking.read_device_cookie(signed(tracking.DEVICE_SALT))
    if device is not None:
        assert isinstance(device.device_id, str) and type(device.team_id) is int
    link = document_tokens.read_link_token(core_tokens.sign(document_tokens.LINK_PURPOSE, payload))
    if link is not None:
        assert all(type(v) is int and v >= 0 for v in vars(link).values())


destinations = st.one_of(
    st.text(max_size=80),
    st.builds(lambda scheme, rest: scheme + rest,
              st.sampled_from(["http://", "https://", "HTTP://", "javascript:", "//", "data:",
                               "http:/", "https:\\\\", " http://", "\thttp://", "mailto:"]),
              st.text(max_size=60)),
)  # fmt: skip


@fuzz(100)
@given(destinations)
def test_a_click_goes_only_to_its_signed_http_destination(env: Settings, url: str) -> None:
    token = tracking.click_token(7, 3, 0, 1_800_000_000, 1, url)
    accepted = url.lower().startswith(("http://", "https://"))
    app = SightlineAsgi()
    app.start()

    async def scenario() -> None:
        try:
            answer = await call(app, "GET", f"/c/{token}")
        finally:
            await app.stop()
        if not accepted:
            assert answer.status == 404 and "location" not in answer.headers
            return
        assert answer.status == 302
        location = answer.headers["location"]
        assert location == safe_location(url).decode()
        assert location.isascii() and location.isprintable() and " " not in location
        assert location.lower().startswith(("http://", "https://"))

    asyncio.run(scenario())


@fuzz(100)
@given(token_text)
def test_a_forged_click_never_redirects(env: Settings, text: str) -> None:
    app = SightlineAsgi()
    app.start()
    path = "/c/" + "".join(c for c in text if c.isprintable() and c not in "/?#")

    async def scenario() -> None:
        try:
            answer = await call(app, "GET", path)
        finally:
            await app.stop()
        assert answer.status == 404
        assert "location" not in answer.headers

    asyncio.run(scenario())


@fuzz(300)
@given(st.text(max_size=200))
def test_safe_location_is_one_ascii_header_value(url: str) -> None:
    value = safe_location(url)
    assert value.isascii()
    assert not any(byte < 0x21 or byte == 0x7F for byte in value)
