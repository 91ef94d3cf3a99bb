"""The public tracking endpoints under abuse and outages: shed what hammers, keep what reads.

The ASGI front door is driven in-process with real HTTP scopes against a real
Redis (as in tests/integration/test_tracking_edge.py):

- one address hammering one email's pixel or link is shed after the burst:
  still answered (the image, the redirect), not kept, counted and labelled;
- many readers behind one address (Gmail's image proxy, Apple's relays) are
  never shed: the bucket is per copy of an email, not per address;
- a Redis restart costs a pixel some latency, not the hit.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from config import Settings, get_settings
from core import redis as core_redis
from core.tracking.tokens import click_token, open_token
from tests.integration.test_tracking_edge import CHROME, call, entries, run
from tests.services.redis import PrivateRedisServer
from web.tracking.app import SightlineAsgi
from web.tracking.limits import BURST, SHED_KEY, HitLimiter

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url  # the edge never touches the database


GOOGLE_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@pytest.fixture
def stream(env: Settings) -> redis.Redis:
    return core_redis.get_redis()


def test_one_address_hammering_one_pixel_is_shed_after_the_burst(stream: redis.Redis) -> None:
    path = f"/o/{open_token(41, 7, 0, 1_800_000_000)}.gif"

    async def scenario(app: SightlineAsgi) -> None:
        answers = [
            await call(app, "GET", path, {"User-Agent": CHROME}, client="203.0.113.9")
            for _ in range(BURST + 15)
        ]
        assert {a.status for a in answers} == {200}  # the image, always
        shed = [a for a in answers if a.headers.get("x-sightline-hit") == "shed"]
        assert len(shed) == 15
        assert all(a.body.startswith(b"GIF89a") for a in shed)
        # Another reader of the same email is not affected.
        other = await call(app, "GET", path, {"User-Agent": CHROME}, client="203.0.113.10")
        assert "x-sightline-hit" not in other.headers

    run(scenario)  # stopping the app flushes the shed counts
    assert len(entries(stream)) == BURST + 1
    assert stream.hgetall(SHED_KEY) == {b"open": b"15"}


def test_a_shed_click_still_goes_through(stream: redis.Redis) -> None:
    path = f"/c/{click_token(41, 7, 0, 1_800_000_000, 2, 'https://acme.test/pricing')}"

    async def scenario(app: SightlineAsgi) -> None:
        for n in range(BURST + 3):
            answer = await call(app, "GET", path, {"User-Agent": CHROME}, client="203.0.113.9")
            assert (answer.status, answer.headers["location"]) == (302, "https://acme.test/pricing")
            assert ("x-sightline-hit" in answer.headers) == (n >= BURST)

    run(scenario)
    assert len(entries(stream)) == BURST
    assert stream.hgetall(SHED_KEY) == {b"click": b"3"}


def test_many_readers_behind_one_proxy_address_are_never_shed(stream: redis.Redis) -> None:
    async def scenario(app: SightlineAsgi) -> None:
        for sent_id in range(1, 4 * BURST):
            path = f"/o/{open_token(sent_id, 7, 0, 1_800_000_000)}.gif"
            answer = await call(app, "GET", path, {"User-Agent": GOOGLE_PROXY}, "66.249.84.1")
            assert answer.status == 200 and "x-sightline-hit" not in answer.headers

    run(scenario)
    assert len(entries(stream)) == 4 * BURST - 1
    assert stream.hgetall(SHED_KEY) == {}


def test_a_forged_pixel_never_reaches_a_bucket(stream: redis.Redis) -> None:
    async def scenario(app: SightlineAsgi) -> None:
        for n in range(3 * BURST):
            answer = await call(app, "GET", f"/o/forged-{n % 2}.gif", client="203.0.113.9")
            assert answer.status == 200 and "x-sightline-hit" not in answer.headers
        assert app.limiter.buckets == {}

    run(scenario)
    assert entries(stream) == []


def test_the_bucket_refills() -> None:
    limiter = HitLimiter(burst=2, refill_seconds=10)
    key = ("203.0.113.9", "open", 1, 0, -1)
    assert [limiter.allow(key, 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow(key, 9.0) is False
    assert limiter.allow(key, 10.5) is True
    assert limiter.take_shed() == {"open": 2}
    assert limiter.take_shed() == {}


def test_memory_stays_bounded_and_full_buckets_go_first() -> None:
    limiter = HitLimiter(burst=3, refill_seconds=1, max_buckets=100)
    for n in range(1000):
        limiter.allow(("198.51.100.1", "open", n, 0, -1), float(n) / 1000)
    assert len(limiter.buckets) <= 100


def test_a_pixel_waits_out_a_redis_restart_instead_of_losing_the_hit(
    env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PrivateRedisServer(appendonly=True, appendfsync="always").start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url())
        get_settings.cache_clear()
        path = f"/o/{open_token(41, 7, 0, 1_800_000_000)}.gif"
        result: dict[str, int] = {}

        def pixel_while_redis_is_down() -> None:
            async def scenario(app: SightlineAsgi) -> None:
                assert (await call(app, "GET", path)).status == 200
                ready.set()
                await asyncio.sleep(0.3)  # the main thread stops Redis meanwhile
                result["status"] = (await call(app, "GET", path)).status

            run(scenario)

        ready = threading.Event()
        worker = threading.Thread(target=pixel_while_redis_is_down)
        worker.start()
        assert ready.wait(30)
        server.stop()
        time.sleep(2.5)  # down a while, as in a restart or a failover
        server.start()  # in the main thread: a spawned server dies with its thread
        worker.join(timeout=30)
        assert result == {"status": 200}
        client = redis.Redis.from_url(server.url())
        assert len(entries(client)) == 2
        client.close()
    finally:
        server.close()


def test_addresses_of_one_ipv6_64_share_a_bucket_and_mapped_ipv4_is_ipv4(
    stream: redis.Redis,
) -> None:
    """A client may use any address of its /64 (privacy addresses rotate there):
    a fresh address per hit must not be a fresh bucket."""
    path = f"/o/{open_token(41, 7, 0, 1_800_000_000)}.gif"

    async def scenario(app: SightlineAsgi) -> None:
        rotating = [
            await call(app, "GET", path, {"User-Agent": CHROME}, client=f"2001:db8:1:2::{n:x}")
            for n in range(1, BURST + 6)
        ]
        assert sum(a.headers.get("x-sightline-hit") == "shed" for a in rotating) == 5
        # Another /64 is another client.
        other = await call(app, "GET", path, {"User-Agent": CHROME}, client="2001:db8:1:3::1")
        assert "x-sightline-hit" not in other.headers
        # One IPv4 client, written both ways by a dual-stack listener: one bucket.
        for n in range(BURST + 2):
            written = "::ffff:198.51.100.7" if n % 2 else "198.51.100.7"
            answer = await call(app, "GET", path, {"User-Agent": CHROME}, client=written)
            assert ("x-sightline-hit" in answer.headers) == (n >= BURST), (n, written)

    run(scenario)
    assert stream.hgetall(SHED_KEY) == {b"open": b"7"}
