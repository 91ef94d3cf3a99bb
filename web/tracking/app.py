"""The ASGI app: pixel, click, Live Feed stream and push webhooks natively; the rest to Flask.

Pixel ``GET|HEAD /o/<token>.gif``::

    token verified (signature only) ──bad──▶ the GIF, nothing recorded, never a 5xx
        │ good
        ▼
    XADD sightline:hits ──failed──▶ 503 (the hit was not kept: we never claim it was)
        │ ok
        ▼
    the 43-byte GIF, no-store

Click ``GET|HEAD /c/<token>``: the destination comes from the signed token only.
Bad token: 404 page. Good token: XADD, then 302 to the destination — also when
Redis is down (logged as a lost hit): a prospect's click is never blocked.

A team's tracking host (`web.tracking.hosts`: a Host a team claimed) answers
only what a recipient opens: the pixel, clicks, the document viewer (``/d/``,
its stylesheet, script and icon); everything else there is a 404, never the
app, sign-in or API. A token of another team on it is treated as forged (the
GIF and nothing kept; the bad-link page); the viewer checks its links the same
way. Any other Host (the operator's) is served as before. ``/tls/allowed?domain=``
(not on a team's host) tells a reverse proxy with on-demand TLS which names may
get a certificate: the operator's and verified team hosts. ``/webhooks/`` (Gmail's
Pub/Sub pushes, Graph's notifications; not on a team's host) is `web.webhooks`,
also without Flask.

A failed XADD (Redis restarting, a failover) is retried for up to
`APPEND_RETRY_SECONDS` before a pixel answers 503, so a brief outage costs a
little latency, not opens. A valid token hammered from one address is shed by
a per-copy token bucket (`web.tracking.limits`): answered, counted, not kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, quote

import redis.asyncio as aioredis
from a2wsgi import WSGIMiddleware
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from config import get_settings
from config.logging import configure_logging
from core.db import session_scope
from core.redis import client_url
from core.tracking import hits as hit_stream
from core.tracking.classify import client_ip, is_prefetch
from core.tracking.tokens import (
    DEVICE_COOKIE,
    ClickToken,
    DeviceRef,
    OpenToken,
    read_click_token,
    read_device_cookie,
    read_open_token,
)
from core.tracking_domains import operator_host, request_host, verified_team_of
from web import create_app, webhooks
from web.tracking.hosts import TeamHosts
from web.tracking.limits import FLUSH_SECONDS, SHED_KEY, HitLimiter, address_key
from web.tracking.live import LiveFeed

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
NO_STORE = b"no-store, no-cache, must-revalidate, max-age=0, private"
_PIXEL_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(PIXEL)).encode()),
    (b"cache-control", NO_STORE),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
    (b"x-content-type-options", b"nosniff"),
]
_BAD_LINK_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Link not valid</title>"
    b"<p>This link is not valid. It may have been copied incompletely.</p></html>"
)
# Everything legal in a URL stays as written (including existing %-escapes).
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~-._"
_HTML_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", NO_STORE),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
_SHED_HEADER = (b"x-sightline-hit", b"shed")
TokenT = TypeVar("TokenT", bound=OpenToken)
_NOT_FOUND_PAGE = (
    b"<!doctype html><html lang=en><meta charset=utf-8><title>Not found</title>"
    b"<p>Nothing here. This address only serves links in emails.</p></html>"
)
# What a team's tracking host serves through Flask: the document viewer and its files.
_TEAM_HOST_FLASK = ("/d/", "/static/documents/")
_TEAM_HOST_FLASK_FILES = ("/static/favicon.svg", "/favicon.ico")
# How long a failed XADD is retried (Redis restarting) before the hit is given up.
APPEND_RETRY_SECONDS = 3.0


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _device(scope: Scope) -> DeviceRef | None:
    cookies = header(scope, b"cookie")
    if not cookies or DEVICE_COOKIE not in cookies:
        return None
    for part in cookies.split(";"):
        name, _, value = part.strip().partition("=")
        if name == DEVICE_COOKIE:
            return read_device_cookie(value.strip().strip('"'))
    return None


class HitWriter:
    """Appends hits to the stream, many XADDs per round trip.

    Requests that arrive while a pipeline is in flight wait for the next one, so
    under load each round trip carries a batch and a quiet server sends one
    XADD at a time. Each caller gets its own entry's result (or error): a hit is
    acknowledged only after its XADD succeeded.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.pending: list[tuple[dict[str, str], asyncio.Future[Any]]] = []
        self.flushing = False
        self.task: asyncio.Future[None] | None = None  # kept: the loop holds tasks weakly

    async def append(self, fields: dict[str, str]) -> None:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending.append((fields, future))
        if not self.flushing:
            self.flushing = True
            self.task = asyncio.ensure_future(self._flush())
        await future

    async def _execute(self, batch: list[tuple[dict[str, str], asyncio.Future[Any]]]) -> list[Any]:
        """XADD the batch in one round trip, retrying while Redis cannot take it.

        A refused connection, a dropped one or Redis still loading its data
        (LOADING) is retried with back-off for up to `APPEND_RETRY_SECONDS`:
        a restart or a failover then costs latency, not hits. Any other error,
        or the time running out, is raised.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + APPEND_RETRY_SECONDS
        delay = 0.05
        attempt = 1
        while True:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for fields, _ in batch:
                        pipe.xadd(hit_stream.STREAM, fields)  # type: ignore[arg-type]
                    results: list[Any] = await pipe.execute(raise_on_error=False)
                if not any(isinstance(r, RedisConnectionError) for r in results):
                    return results
                error: BaseException = next(r for r in results if isinstance(r, Exception))
            except (RedisConnectionError, OSError) as exc:
                error = exc
            if loop.time() + delay > deadline:
                raise error
            log.warning(
                "hit_append_retry attempt=%s entries=%s error=%s",
                attempt,
                len(batch),
                type(error).__name__,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            attempt += 1

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    results = await self._execute(batch)
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.flushing = False


class SightlineAsgi:
    """The `web` process's ASGI callable. Flask is built at lifespan start-up.

    Built then rather than at the first page request, which would wait ~1.2 s
    for it; it is built in every web process either way (pixel and pages share
    the process), so importing it at the top of this module costs nothing more.
    """

    def __init__(self) -> None:
        self.redis: aioredis.Redis | None = None
        self.writer: HitWriter | None = None
        self.flask: AsgiApp | None = None
        self.flask_app: Any = None
        self.trusted: tuple[str, ...] = ()
        self.live: Any = None
        self.limiter = HitLimiter()
        self.shed_flush: asyncio.Future[None] | None = None
        self.hosts: TeamHosts | None = None

    # -- lifespan ---------------------------------------------------------------

    def start(self) -> None:
        settings = get_settings()
        configure_logging(settings)
        self.redis = aioredis.Redis.from_url(client_url(settings))
        self.writer = HitWriter(self.redis)
        self.trusted = settings.forwarded_allow_ips
        self.flask_app = create_app()
        self.flask = cast(AsgiApp, WSGIMiddleware(self.flask_app, workers=16))
        self.live = LiveFeed(self.flask_app, self.redis)
        self.hosts = TeamHosts()

    async def stop(self) -> None:
        if self.live is not None:
            await self.live.close()
        await self._flush_shed()
        if self.redis is not None:
            await self.redis.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.start)
                except Exception as exc:
                    log.exception("web_startup_failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- routing ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        if self.flask is None:
            # No lifespan (a server that skips it): build everything on first use.
            await asyncio.to_thread(self.start)
        path: str = scope["path"]
        assert self.hosts is not None
        team = await self.hosts.team_for(header(scope, b"host"))
        if team is not None:
            await self.team_host(scope, receive, send, path, team)
        elif path.startswith("/o/"):
            await self.pixel(scope, send, path[3:])
        elif path.startswith("/c/"):
            await self.click(scope, send, path[3:])
        elif path == "/tls/allowed":
            await self.tls_allowed(scope, send)
        elif path == "/feed/stream":
            await self.live.stream(scope, receive, send)
        elif path.startswith(webhooks.PREFIX):
            await webhooks.serve(scope, receive, send)
        else:
            assert self.flask is not None
            await self.flask(scope, receive, send)

    async def team_host(
        self, scope: Scope, receive: Receive, send: Send, path: str, team: int
    ) -> None:
        """A team's tracking host: its own tracking paths only."""
        if path.startswith("/o/"):
            await self.pixel(scope, send, path[3:], team)
        elif path.startswith("/c/"):
            await self.click(scope, send, path[3:], team)
        elif path.startswith(_TEAM_HOST_FLASK) or path in _TEAM_HOST_FLASK_FILES:
            assert self.flask is not None
            await self.flask(scope, receive, send)
        else:
            body = b"" if scope["method"] == "HEAD" else _NOT_FOUND_PAGE
            await _respond(send, 404, body, _HTML_HEADERS)

    async def tls_allowed(self, scope: Scope, send: Send) -> None:
        """Caddy's on-demand TLS ``ask``: 200 for a verified team host (or ours), else 404.

        Asked once per name before a certificate is obtained, so an unknown name
        never costs a certificate (nor a CA's rate limit).
        """
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        name = request_host((query.get("domain") or [""])[0])
        allowed = bool(name) and (
            name == operator_host() or await asyncio.to_thread(_verified_host, name)
        )
        await _respond(send, 200 if allowed else 404, b"", [(b"cache-control", NO_STORE)])

    # -- hot paths --------------------------------------------------------------

    def _client_ip(self, scope: Scope) -> str | None:
        peer = scope.get("client")
        return client_ip(peer[0] if peer else None, header(scope, b"x-forwarded-for"), self.trusted)

    def _allowed(self, ip: str | None, token: OpenToken) -> bool:
        """The per-copy rate limit (`web.tracking.limits`); a shed hit is counted."""
        link = token.link if isinstance(token, ClickToken) else -1
        kind = "click" if isinstance(token, ClickToken) else "open"
        key = (address_key(ip), kind, token.sent_message_id, token.recipient, link)
        if self.limiter.allow(key, asyncio.get_running_loop().time()):
            return True
        if self.shed_flush is None:
            self.shed_flush = asyncio.ensure_future(self._flush_shed_later())
        return False

    async def _flush_shed_later(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        self.shed_flush = None
        await self._flush_shed()

    async def _flush_shed(self) -> None:
        """Count what was shed where an operator sees it: the log and a Redis hash."""
        shed = self.limiter.take_shed()
        if not shed:
            return
        for kind, count in sorted(shed.items()):
            log.warning("tracking_shed kind=%s count=%s", kind, count)
        if self.redis is None:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for kind, count in shed.items():
                    pipe.hincrby(SHED_KEY, kind, count)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.error("tracking_shed_not_counted error=%s", type(exc).__name__)

    async def _append(self, scope: Scope, token: OpenToken, ip: str | None) -> None:
        assert self.writer is not None
        fields = hit_stream.encode(
            token,
            method=scope["method"],
            ip=ip,
            user_agent=header(scope, b"user-agent") or "",
            prefetch=is_prefetch(
                (bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                for k, v in scope["headers"]
                if k in (b"purpose", b"sec-purpose", b"x-moz", b"x-purpose")
            ),
            device=_device(scope),
        )
        await self.writer.append(fields)

    async def pixel(self, scope: Scope, send: Send, name: str, team: int | None = None) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"", [(b"allow", b"GET, HEAD")])
            return
        token = _of_team(read_open_token(name.removesuffix(".gif")), team)
        status = 200
        headers = _PIXEL_HEADERS
        if token is not None:
            ip = self._client_ip(scope)
            if not self._allowed(ip, token):
                headers = [*_PIXEL_HEADERS, _SHED_HEADER]
            else:
                try:
                    await self._append(scope, token, ip)
                except (RedisError, OSError) as exc:
                    # Not acknowledged: this hit is lost and we say so.
                    log.error("hit_not_recorded kind=open error=%s", type(exc).__name__)
                    status = 503
        body = b"" if method == "HEAD" else PIXEL
        await _respond(send, status, body, headers)

    async def click(self, scope: Scope, send: Send, name: str, team: int | None = None) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"", [(b"allow", b"GET, HEAD")])
            return
        token = _of_team(read_click_token(name), team)
        if token is None:
            await _respond(send, 404, b"" if method == "HEAD" else _BAD_LINK_PAGE, _HTML_HEADERS)
            return
        ip = self._client_ip(scope)
        extra: list[tuple[bytes, bytes]] = []
        if not self._allowed(ip, token):
            extra.append(_SHED_HEADER)
        else:
            try:
                await self._append(scope, token, ip)
            except (RedisError, OSError) as exc:
                log.error(
                    "hit_not_recorded kind=click sent_id=%s error=%s",
                    token.sent_message_id,
                    type(exc).__name__,
                )
        await _respond(
            send,
            302,
            b"",
            [
                (b"location", safe_location(token.url)),
                (b"cache-control", NO_STORE),
                (b"referrer-policy", b"no-referrer"),
                (b"content-length", b"0"),
                *extra,
            ],
        )


def _of_team(token: TokenT | None, team: int | None) -> TokenT | None:
    """The token, unless it came to a team's host (`team`) and names another team."""
    if token is None or team is None or token.team_id == team:
        return token
    log.warning(
        "tracking_wrong_host sent_id=%s token_team=%s host_team=%s",
        token.sent_message_id,
        token.team_id,
        team,
    )
    return None


def _verified_host(name: str) -> bool:
    with session_scope() as session:
        return verified_team_of(session, name) is not None


def safe_location(url: str) -> bytes:
    """The URL as an ASCII header value: non-ASCII and control characters percent-encoded."""
    return quote(url, safe=_URL_SAFE).encode("ascii")


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    if not any(k == b"content-length" for k, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = SightlineAsgi()
