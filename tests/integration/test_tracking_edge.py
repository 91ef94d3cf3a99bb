"""The web edge: `/o/<token>.gif` and `/c/<token>` against a real Redis.

The ASGI front door is driven in-process with real HTTP scopes (what uvicorn
hands it); every accepted hit must be an entry in the real stream, and nothing
else may be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient

from config import Settings, get_settings
from core import redis as core_redis
from core.tracking.hits import STREAM
from core.tracking.tokens import (
    CLICK_SALT,
    DEVICE_COOKIE,
    click_token,
    device_cookie,
    open_token,
)
from tests.services.redis import PrivateRedisServer
from web.tracking.app import PIXEL, SightlineAsgi

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131 Safari/537.36"


class Reply:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        start = messages[0]
        self.status: int = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        self.body = b"".join(m.get("body", b"") for m in messages[1:])


async def call(
    app: SightlineAsgi,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    client: str = "198.51.100.7",
) -> Reply:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (client, 50000),
        "server": ("127.0.0.1", 5000),
    }
    messages: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(dict(message))

    await app(scope, receive, send)
    return Reply(messages)


def run(scenario: Callable[[SightlineAsgi], Awaitable[None]]) -> None:
    app = SightlineAsgi()
    app.start()

    async def main() -> None:
        try:
            await scenario(app)
        finally:
            await app.stop()

    asyncio.run(main())


def entries(client: redis.Redis) -> list[dict[str, str]]:
    found: Any = client.xrange(STREAM)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in found]


@pytest.fixture
def stream(env: Settings) -> redis.Redis:
    return core_redis.get_redis()


def test_healthz_counts_the_hits_waiting_for_the_events_consumer(
    stream: redis.Redis, client: FlaskClient
) -> None:
    # No `events` consumer runs here: what the edge accepted waits in the stream.
    async def scenario(app: SightlineAsgi) -> None:
        for recipient in range(3):
            token = open_token(41, 7, recipient, 1_800_000_000)
            assert (await call(app, "GET", f"/o/{token}.gif", {"User-Agent": CHROME})).status == 200
        assert (await call(app, "GET", "/o/forged.gif")).status == 200  # records nothing

    assert client.get("/healthz").get_json()["hits_backlog"] == 0
    run(scenario)
    assert client.get("/healthz").get_json()["hits_backlog"] == 3


def test_a_valid_pixel_is_recorded_and_answered_with_the_gif(stream: redis.Redis) -> None:
    token = open_token(41, 7, 0, 1_800_000_000)

    async def scenario(app: SightlineAsgi) -> None:
        reply = await call(app, "GET", f"/o/{token}.gif", {"User-Agent": CHROME})
        assert reply.status == 200
        assert reply.body == PIXEL and len(reply.body) == 43
        assert reply.headers["content-type"] == "image/gif"
        assert "no-store" in reply.headers["cache-control"]
        assert "set-cookie" not in reply.headers

    run(scenario)
    [entry] = entries(stream)
    assert entry == {
        "k": "o",
        "s": "41",
        "t": "7",
        "r": "0",
        "i": "1800000000",
        "m": "GET",
        "a": "198.51.100.7",
        "g": CHROME,
    }


@pytest.mark.parametrize(
    "name",
    [
        "garbage.gif",
        ".gif",
        "WzQxLDcsMCwxODAwMDAwMDAwXQ.gif",  # the payload without its signature
        "WzQxLDcsMCwxODAwMDAwMDAwXQ.AAAAAAAAAAAAAAAAAAAAAAAAAAA.gif",  # a forged signature
        "%00%ff.gif",
        "a" * 5000 + ".gif",
    ],
)
def test_a_forged_or_mangled_pixel_still_gets_the_image_and_records_nothing(
    stream: redis.Redis, name: str
) -> None:
    token = open_token(41, 7, 0, 1_800_000_000)

    async def scenario(app: SightlineAsgi) -> None:
        for path in (f"/o/{name}", f"/o/{token[:-4]}.gif", f"/o/{token}x.gif"):
            reply = await call(app, "GET", path)
            assert (reply.status, reply.body) == (200, PIXEL)

    run(scenario)
    assert entries(stream) == []


def test_head_prefetch_device_cookie_and_forwarded_addresses_are_passed_on(
    stream: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.1.1")
    get_settings.cache_clear()
    token = open_token(41, 7, 0, 1_800_000_000)
    cookie = device_cookie("d" * 32, 7, 3)

    async def scenario(app: SightlineAsgi) -> None:
        head = await call(app, "HEAD", f"/o/{token}.gif")
        assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "43")
        await call(app, "GET", f"/o/{token}.gif", {"Sec-Purpose": "prefetch"})
        await call(
            app, "GET", f"/o/{token}.gif", {"Cookie": f"theme=dark; {DEVICE_COOKIE}={cookie}"}
        )
        await call(app, "GET", f"/o/{token}.gif", {"Cookie": f"{DEVICE_COOKIE}={cookie[:-2]}xx"})
        await call(
            app, "GET", f"/o/{token}.gif", {"X-Forwarded-For": "1.1.1.1, 203.0.113.5"}, "10.1.1.1"
        )
        await call(app, "GET", f"/o/{token}.gif", {"X-Forwarded-For": "1.1.1.1"}, "10.9.9.9")
        posted = await call(app, "POST", f"/o/{token}.gif")
        assert posted.status == 405

    run(scenario)
    head, prefetch, with_cookie, forged_cookie, proxied, spoofed = entries(stream)
    assert head["m"] == "HEAD"
    assert prefetch["p"] == "1"
    assert (with_cookie["d"], with_cookie["e"]) == ("d" * 32, "7")
    assert "d" not in forged_cookie
    assert proxied["a"] == "203.0.113.5"
    assert spoofed["a"] == "10.9.9.9"


def test_a_click_goes_only_where_the_token_says(stream: redis.Redis) -> None:
    destination = "https://acme.test/pricing?plan=team&ref=mail#top"
    token = click_token(41, 7, 0, 1_800_000_000, 2, destination)
    unicode_token = click_token(41, 7, 0, 1_800_000_000, 3, "https://acme.test/café?q=a b")

    async def scenario(app: SightlineAsgi) -> None:
        reply = await call(app, "GET", f"/c/{token}", {"User-Agent": CHROME})
        assert reply.status == 302
        assert reply.headers["location"] == destination
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert "set-cookie" not in reply.headers
        encoded = await call(app, "GET", f"/c/{unicode_token}")
        assert encoded.headers["location"] == "https://acme.test/caf%C3%A9?q=a%20b"
        # Anything not signed by us is a 404 page, never a redirect.
        from itsdangerous import URLSafeSerializer

        forged = URLSafeSerializer("not-our-key-0123456789-abcdefghijklmnop", salt=CLICK_SALT)
        for bad in (
            token[:-1],
            "garbage",
            forged.dumps([41, 7, 0, 1, 2, "https://evil.test/"]),
            open_token(41, 7, 0, 1),
        ):
            refused = await call(app, "GET", f"/c/{bad}")
            assert refused.status == 404, bad
            assert "location" not in refused.headers
            assert b"not valid" in refused.body

    run(scenario)
    clicks = entries(stream)
    assert len(clicks) == 2
    assert (clicks[0]["k"], clicks[0]["l"], clicks[0]["u"]) == ("c", "2", destination)


def test_when_redis_is_down_the_pixel_says_so_and_the_click_still_goes_through(
    env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PrivateRedisServer().start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url())
        get_settings.cache_clear()
        open_path = f"/o/{open_token(41, 7, 0, 1_800_000_000)}.gif"
        click_path = f"/c/{click_token(41, 7, 0, 1_800_000_000, 0, 'https://acme.test/')}"

        async def scenario(app: SightlineAsgi) -> None:
            assert (await call(app, "GET", open_path)).status == 200
            server.stop()
            down = await call(app, "GET", open_path)
            assert down.status == 503  # not acknowledged: we do not pretend it was kept
            click = await call(app, "GET", click_path)
            assert (click.status, click.headers["location"]) == (302, "https://acme.test/")
            bad = await call(app, "GET", "/o/forged.gif")
            assert bad.status == 200  # a bad token never touches Redis

        run(scenario)
    finally:
        server.close()
