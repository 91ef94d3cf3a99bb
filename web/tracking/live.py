"""The Live Feed's server-sent events (`GET /feed/stream`), served on the event loop.

One `LiveFeed` per web process. While anyone is connected, a single poller asks
the database for new events every `POLL_SECONDS` (and at once when the events
worker publishes a nudge on `sightline:feed:nudge`), then hands each item to the
connections of *its own team* whose filters it matches. Reading the database
rather than a pub/sub message means every event is seen, whoever recorded it
(a send, a reply found by a sync, an open drained from the hit stream).

An item can change in place: a document visit is one item, read on page by page.
Its beacon publishes a nudge naming the item (`core.tracking.hits.feed_update`);
the poller reads that item again and sends it as an `update` event (no SSE id:
a client's place in the stream stays the newest new item), which the page puts
where the item already is. A lost nudge costs one stale line until the next
beacon, ten seconds later, or a reload.

Ids are not always committed in order on PostgreSQL (two transactions, the later
id committing first), so the poller re-reads a few seconds of recent ids and
drops the ones already delivered. A client that reconnects sends
`Last-Event-ID` (or `?after=`) and first gets what it missed.

Authentication is the Flask session cookie, verified with the Flask app's own
session serializer; the user must still exist and belong to the session's team.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import func, select

from core.db import session_scope
from core.models import Event, User
from core.tracking.hits import FEED_NUDGE_CHANNEL, feed_updated_item
from web.feed import FeedArgumentError, FeedFilter, feed_items, parse_filter

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
KEEPALIVE_SECONDS = 15.0
REREAD_SECONDS = 5.0
CATCH_UP_LIMIT = 200
POLL_LIMIT = 1000
QUEUE_SIZE = 1000
UPDATE = "_update"  # marks a queued item as a change to one already sent


@dataclass(eq=False)
class Subscriber:
    team_id: int
    feed_filter: FeedFilter
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=QUEUE_SIZE)
    )


class _MultiArgs(dict[str, list[str]]):
    def getlist(self, name: str) -> list[str]:
        return self.get(name, [])

    def get_one(self, name: str) -> str | None:
        values = self.get(name)
        return values[0] if values else None


class _Args:
    """Query arguments with the `get`/`getlist` shape `web.feed.parse_filter` reads."""

    def __init__(self, query_string: bytes) -> None:
        self._values = _MultiArgs(parse_qs(query_string.decode("latin-1")))

    def get(self, name: str, default: Any = None) -> Any:
        value = self._values.get_one(name)
        return default if value is None else value

    def getlist(self, name: str) -> list[str]:
        return self._values.getlist(name)


class LiveFeed:
    def __init__(self, flask_app: Any, redis: aioredis.Redis) -> None:
        self.flask_app = flask_app
        self.redis = redis
        self.subscribers: set[Subscriber] = set()
        self.poller: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.delivered: set[int] = set()
        self.floors: deque[tuple[float, int]] = deque()
        self.updated: set[int] = set()  # items that changed in place, to send again

    async def close(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.poller

    # -- authentication -------------------------------------------------------

    def _session(self, scope: dict[str, Any] | Any) -> dict[str, Any] | None:
        app = self.flask_app
        name = app.config["SESSION_COOKIE_NAME"]
        cookie_header = ""
        for key, value in scope["headers"]:
            if key == b"cookie":
                cookie_header = bytes(value).decode("latin-1")
        for part in cookie_header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                serializer = app.session_interface.get_signing_serializer(app)
                if serializer is None:
                    return None
                try:
                    data = serializer.loads(
                        value, max_age=int(app.permanent_session_lifetime.total_seconds())
                    )
                except Exception:  # noqa: BLE001 - any bad cookie is simply "not signed in"
                    return None
                return data if isinstance(data, dict) else None
        return None

    @staticmethod
    def _user_team(user_id: int, team_id: int) -> int | None:
        with session_scope() as session:
            user = session.get(User, user_id)
            return user.team_id if user is not None and user.team_id == team_id else None

    # -- the stream -----------------------------------------------------------

    async def stream(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] != "GET":
            await _plain(send, 405, "use GET")
            return
        data = self._session(scope)
        user_id, team_id = (data or {}).get("user_id"), (data or {}).get("team_id")
        if not isinstance(user_id, int) or not isinstance(team_id, int):
            await _plain(send, 401, "sign in first")
            return
        if await asyncio.to_thread(self._user_team, user_id, team_id) is None:
            await _plain(send, 401, "sign in first")
            return
        args = _Args(scope.get("query_string", b""))
        try:
            feed_filter = parse_filter(args)
            after = _last_event_id(scope) or int(args.get("after") or 0)
        except (FeedArgumentError, ValueError) as exc:
            await _plain(send, 400, str(exc))
            return
        subscriber = Subscriber(team_id, feed_filter)
        self._subscribe(subscriber)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            await _body(send, b"retry: 2000\n\n")
            missed = await asyncio.to_thread(self._catch_up, team_id, feed_filter, after)
            sent_ids = set()
            for item in missed:
                sent_ids.add(item["id"])
                await _body(send, _event(item))
            await self._pump(subscriber, receive, send, sent_ids)
        finally:
            self.subscribers.discard(subscriber)

    async def _pump(self, subscriber: Subscriber, receive: Any, send: Any, seen: set[int]) -> None:
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            while not disconnected.done():
                getter = asyncio.ensure_future(subscriber.queue.get())
                done, _ = await asyncio.wait(
                    {getter, disconnected},
                    timeout=KEEPALIVE_SECONDS,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if getter in done:
                    item = getter.result()
                    if item.get(UPDATE):
                        seen.add(item["id"])
                        await _body(send, _event(item, "update"))
                    elif item["id"] not in seen:
                        await _body(send, _event(item))
                else:
                    getter.cancel()
                    if not done:
                        await _body(send, b": keepalive\n\n")
        except OSError:
            pass  # the client went away mid-write
        finally:
            disconnected.cancel()

    @staticmethod
    def _catch_up(team_id: int, feed_filter: FeedFilter, after: int) -> list[dict[str, Any]]:
        if after <= 0:
            return []
        with session_scope() as session:
            return feed_items(
                session,
                team_id=team_id,
                feed_filter=feed_filter,
                after_id=after,
                limit=CATCH_UP_LIMIT,
                newest_first=False,
            )

    # -- the shared poller ----------------------------------------------------

    def _subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        if self.poller is None or self.poller.done():
            self.poller = asyncio.ensure_future(self._poll_forever())

    @staticmethod
    def _max_id() -> int:
        with session_scope() as session:
            return int(session.scalar(select(func.max(Event.id))) or 0)

    @staticmethod
    def _new_items(floor: int) -> list[dict[str, Any]]:
        with session_scope() as session:
            return feed_items(
                session, team_id=None, after_id=floor, limit=POLL_LIMIT, newest_first=False
            )

    async def _poll_forever(self) -> None:
        listener = asyncio.ensure_future(self._listen_for_nudges())
        try:
            start = await asyncio.to_thread(self._max_id)
            self.floors = deque([(time.monotonic(), start)])
            self.delivered = set()
            while self.subscribers:
                try:
                    await self._poll_once()
                except Exception:
                    log.exception("feed_poll_failed")
                    await asyncio.sleep(1)
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=POLL_SECONDS)
        finally:
            listener.cancel()

    @staticmethod
    def _items(ids: set[int]) -> list[dict[str, Any]]:
        with session_scope() as session:
            return feed_items(session, team_id=None, ids=ids, limit=len(ids))

    def _hand_out(self, item: dict[str, Any]) -> None:
        for subscriber in list(self.subscribers):
            if subscriber.team_id == item["team_id"] and subscriber.feed_filter.matches(item):
                with contextlib.suppress(asyncio.QueueFull):
                    subscriber.queue.put_nowait(item)

    async def _poll_once(self) -> None:
        now = time.monotonic()
        floor = self.floors[0][1]
        items = await asyncio.to_thread(self._new_items, floor)
        highest = max([floor, *(i["id"] for i in items)])
        for item in items:
            if item["id"] in self.delivered:
                continue
            self.delivered.add(item["id"])
            self._hand_out(item)
        if self.updated:
            changed, self.updated = self.updated, set()
            for item in await asyncio.to_thread(self._items, changed):
                self._hand_out({**item, UPDATE: True})
        self.floors.append((now, highest))
        # Keep re-reading ids from the last REREAD_SECONDS; forget what is older.
        while len(self.floors) > 1 and self.floors[1][0] < now - REREAD_SECONDS:
            self.floors.popleft()
        oldest = self.floors[0][1]
        self.delivered = {i for i in self.delivered if i > oldest}

    async def _listen_for_nudges(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(FEED_NUDGE_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            item_id = feed_updated_item(message.get("data") or b"")
                            if item_id is not None and len(self.updated) < POLL_LIMIT:
                                self.updated.add(item_id)
                            self.wake.set()
            except (RedisError, OSError) as exc:
                log.warning("feed_nudges_unavailable error=%s", type(exc).__name__)
                await asyncio.sleep(5)


def _last_event_id(scope: Any) -> int | None:
    for key, value in scope["headers"]:
        if key == b"last-event-id":
            text = bytes(value).decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


def _event(item: dict[str, Any], kind: str = "item") -> bytes:
    public = {k: v for k, v in item.items() if k not in ("team_id", UPDATE)}
    if kind == "update":  # no id: the client's place in the stream stays where it is
        return f"event: update\ndata: {json.dumps(public)}\n\n".encode()
    return f"id: {item['id']}\nevent: item\ndata: {json.dumps(public)}\n\n".encode()


async def _wait_disconnect(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _body(send: Any, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _plain(send: Any, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
