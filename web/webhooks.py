"""Push endpoints: Gmail through Cloud Pub/Sub, Microsoft 365 through Graph change notifications.

Each answers fast and does nothing slow: verify, look the mailbox up with one
indexed query, `request_sync` (at most one waiting sync per mailbox), answer.
The sync itself runs on a worker. Must never call a mailbox, log a token, or
trust a push it could not verify.

Served natively by the ASGI app (`web.tracking.app` routes /webhooks/ here), not
through Flask: a push is most of what `web` does at scale, and Flask's request
machinery and a2wsgi's thread hand-off cost more than the push itself. What
blocks (the database, Redis, fetching Google's certificates) runs on this
module's own threads, one hop per request (two for a push token not seen
before), never on the event loop; checks that are only CPU (a remembered push
token, the shared token, the validation echo, size limits) answer on the loop.
Every answer carries `X-Content-Type-Options: nosniff`, as Flask's did.

    POST /webhooks/gmail   Pub/Sub push. Verified by its OIDC token (Google's
                           signature, our audience, Google's issuer, optionally
                           the service account), or for self-hosters without push
                           authentication by ?token=GMAIL_PUSH_TOKEN, checked before
                           the body is read. A push whose historyId the stored cursor
                           already passed is ignored. 204 acknowledges (even for an
                           unknown address or a malformed message: Pub/Sub would
                           otherwise redeliver for a week); 403 refuses; a body over
                           10 MiB is 413 (Flask's limit before).
    POST /webhooks/graph   ?validationToken=… → 200 text/plain echo (Graph's handshake);
                           notifications → body ≤ 1 MiB and ≤ 1,000 notifications (413),
                           shape checked, each clientState's HMAC checked (it names its
                           mailbox: no database access), repeats collapsed, then ONE
                           query maps the subscriptions to mailboxes; a notification
                           whose subscription is not its state's mailbox's is dropped;
                           lifecycle events (reauthorizationRequired,
                           subscriptionRemoved) renew the subscription, `missed` and
                           changes sync; 202 acknowledges a batch with at least one
                           verified notification, 403 refuses one with none.
    anything else under /webhooks/: 404; another method: 405.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs

from config import get_settings
from worker.sync.engine import request_sync
from worker.sync.gmail_push import PushTokenError, remembered_push_token, verify_push_token
from worker.sync.push import (
    mailbox_for_client_state,
    mailboxes_for_gmail_push,
    mailboxes_for_subscriptions,
    request_renewal,
)

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Answer = tuple[int, str]  # status, plain-text body ("" for none)

PREFIX = "/webhooks/"
MAX_VALIDATION_TOKEN = 1024
MAX_GMAIL_BODY = 10 * 1024 * 1024  # Flask's MAX_CONTENT_LENGTH, which served it before
# Graph change notifications (learn.microsoft.com/graph/api/resources/
# changenotificationcollection, .../changenotification, and /graph/
# change-notifications-delivery-webhooks): a POST carries {"value": [changeNotification]};
# subscriptionId is a GUID (36 characters), clientState at most 255 characters; Graph
# wants an answer within 3 seconds and retries anything but a 2xx for up to 4 hours.
# Graph documents no maximum batch size; a basic notification (no resource data, all
# we subscribe to) is under 1 KB, so 1 MiB and 1,000 notifications leave real batches
# room while a forged one costs us at most that much parsing and no query per element.
MAX_GRAPH_BODY = 1024 * 1024
MAX_GRAPH_NOTIFICATIONS = 1000
MAX_SUBSCRIPTION_ID = 64
MAX_CLIENT_STATE = 255
RENEWING_EVENTS = ("reauthorizationRequired", "subscriptionRemoved")
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# The webhooks' own threads for what blocks: a database or Redis that hangs holds
# these, not the loop's default executor (the tracking hosts' refresh, /tls/allowed).
THREADS = 8
_blocking = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="webhooks")
A = TypeVar("A")
T = TypeVar("T")


async def _in_thread(function: Callable[[A], T], argument: A) -> T:
    return await asyncio.get_running_loop().run_in_executor(_blocking, function, argument)


class _ClientGoneError(Exception):
    """The sender hung up before its body was read: nothing to answer."""


async def serve(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app for everything under /webhooks/."""
    route = {"/webhooks/gmail": _gmail, "/webhooks/graph": _graph}.get(scope["path"])
    if route is None:
        await _answer(send, (404, "not found"))
        return
    if scope["method"] != "POST":
        await _answer(send, (405, "POST only"), [(b"allow", b"POST")])
        return
    query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
    try:
        answer = await route(scope, receive, {k: v[0] for k, v in query.items()})
    except _ClientGoneError:
        return
    await _answer(send, answer)


async def _answer(
    send: Send, answer: Answer, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    status, text = answer
    body = text.encode()
    headers = [_NOSNIFF, (b"content-length", str(len(body)).encode()), *(extra or [])]
    if body:
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return ""


async def _body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is longer than `limit` (declared or streamed).

    Reads at most `limit` plus one message: a chunked body has no Content-Length
    to refuse by.
    """
    declared = _header(scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


# -- Gmail ------------------------------------------------------------------------


async def _gmail(scope: Scope, receive: Receive, query: dict[str, str]) -> Answer:
    if not await _gmail_push_allowed(_header(scope, b"authorization"), query.get("token", "")):
        return 403, "push not verified"
    body = await _body(scope, receive, MAX_GMAIL_BODY)
    if body is None:
        return 413, f"at most {MAX_GMAIL_BODY} bytes per request"
    return await _in_thread(gmail_push, body)


async def _gmail_push_allowed(authorization: str, given: str) -> bool:
    """Google's OIDC token, or the shared token in the URL.

    A token verified before is checked on the loop (no I/O); a new one in a thread
    (it may fetch Google's certificates).
    """
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        try:
            if remembered_push_token(token) is None:
                await _in_thread(verify_push_token, token)
        except PushTokenError as exc:
            log.warning("gmail_push_refused reason=%s", exc)
            return False
        return True
    shared = get_settings().providers.gmail_push_token
    return shared is not None and hmac.compare_digest(shared.encode(), given.encode())


def _history_id(cursor: dict[str, Any] | None) -> int | None:
    value = (cursor or {}).get("history_id")
    return int(value) if isinstance(value, str | int) and str(value).isdigit() else None


def gmail_push(body: bytes) -> Answer:
    """A verified push's body: queue a sync for each of its mailboxes with news. Blocking."""
    try:
        envelope = json.loads(body)
        data = envelope["message"]["data"]
        notice = json.loads(base64.b64decode(data, validate=True))
        address = str(notice["emailAddress"]).lower()
        history_id = int(notice["historyId"])
    except (KeyError, TypeError, ValueError, RecursionError, binascii.Error):
        # A malformed message never becomes well-formed: acknowledge it, or Pub/Sub
        # redelivers it for days.
        log.warning("gmail_push_malformed")
        return 204, ""
    queued = 0
    for mailbox_id, cursor in mailboxes_for_gmail_push(address):
        seen = _history_id(cursor)
        if seen is not None and seen >= history_id:
            continue  # a redelivery, or a change the last sync already read
        queued += int(request_sync(mailbox_id, pushed=True))
    log.info("gmail_push history_id=%s queued=%s", history_id, queued)
    return 204, ""


# -- Microsoft Graph ----------------------------------------------------------------


async def _graph(scope: Scope, receive: Receive, query: dict[str, str]) -> Answer:
    token = query.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            return 400, "validation token too long"
        return 200, token
    data = await _body(scope, receive, MAX_GRAPH_BODY)
    if data is None:
        return 413, f"at most {MAX_GRAPH_BODY} bytes per request"
    return await _in_thread(graph_notification, data)


def graph_notification(data: bytes) -> Answer:
    """A notification batch's body: verify each, then renew or sync its mailboxes. Blocking."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        body = None
    notifications = body.get("value") if isinstance(body, dict) else None
    if not isinstance(notifications, list) or not notifications:
        return 400, 'expected {"value": [...]}'
    if len(notifications) > MAX_GRAPH_NOTIFICATIONS:
        return 413, f"at most {MAX_GRAPH_NOTIFICATIONS} notifications per request"
    wanted = _verified_wants(notifications)
    if not wanted:
        # Not one clientState of ours: refused, without a query. (Graph would retry a
        # real one for up to 4 hours; a state we cannot verify never becomes one.)
        return 403, "no notification carried a clientState of ours"
    owners = mailboxes_for_subscriptions({subscription for subscription, _ in wanted})
    renew: set[int] = set()
    sync: set[int] = set()
    for (subscription, mailbox_id), action in wanted.items():
        if owners.get(subscription) != mailbox_id:
            continue  # a state of ours on a subscription that is not (or no longer) its
        (renew if action == "renew" else sync).add(mailbox_id)
    for mailbox_id in sorted(renew):
        request_renewal(mailbox_id)
    for mailbox_id in sorted(sync):
        request_sync(mailbox_id, pushed=True)  # pushed: its delay is measured
    log.info(
        "graph_notifications received=%s verified=%s synced=%s renewed=%s",
        len(notifications),
        len(wanted),
        len(sync),
        len(renew),
    )
    return 202, ""


def _verified_wants(notifications: list[Any]) -> dict[tuple[str, int], str]:
    """(subscription id, mailbox) → "sync" or "renew", for notifications whose clientState is ours.

    Cheap checks first (shape, lengths), then one HMAC per distinct clientState;
    nothing here asks the database per notification (`mailbox_for_client_state`).
    Repeats collapse: a batch of a thousand notices for one mailbox is one entry.
    """
    wanted: dict[tuple[str, int], str] = {}
    checked: dict[str, int | None] = {}
    refused = 0
    for notification in notifications:
        if not isinstance(notification, dict):
            refused += 1
            continue
        subscription = notification.get("subscriptionId")
        given = notification.get("clientState")
        event = notification.get("lifecycleEvent")
        if (
            not isinstance(subscription, str)
            or not 0 < len(subscription) <= MAX_SUBSCRIPTION_ID
            or not isinstance(given, str)
            or not 0 < len(given) <= MAX_CLIENT_STATE
            or not (event is None or isinstance(event, str))
        ):
            refused += 1
            continue
        if given not in checked:
            checked[given] = mailbox_for_client_state(given)
        mailbox_id = checked[given]
        if mailbox_id is None:
            refused += 1
            continue
        # A change, or "missed": either way, read what is new. Renewal wins over a sync
        # for the same subscription: the renewal job's own sync follows.
        action = "renew" if event in RENEWING_EVENTS else "sync"
        if wanted.get((subscription, mailbox_id)) != "renew":
            wanted[(subscription, mailbox_id)] = action
    if refused:
        log.warning("graph_notifications_refused count=%s reason=shape_or_client_state", refused)
    return wanted
