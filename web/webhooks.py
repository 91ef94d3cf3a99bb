"""Push endpoints: Gmail through Cloud Pub/Sub, Microsoft 365 through Graph change notifications.

Each answers fast and does nothing slow: verify, look the mailbox up with one
indexed query, `request_sync` (at most one waiting sync per mailbox), answer.
The sync itself runs on a worker. Must never call a mailbox, log a token, or
trust a push it could not verify.

    POST /webhooks/gmail   Pub/Sub push. Verified by its OIDC token (Google's
                           signature, our audience, Google's issuer, optionally
                           the service account), or for self-hosters without push
                           authentication by ?token=GMAIL_PUSH_TOKEN. A push whose
                           historyId the stored cursor already passed is ignored.
                           204 acknowledges (even for an unknown address: Pub/Sub
                           would otherwise redeliver for a week); 401/403 refuse.
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
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from typing import Any

from flask import Blueprint, Response, request
from flask.typing import ResponseReturnValue

from config import get_settings
from worker.sync.engine import request_sync
from worker.sync.gmail_push import PushTokenError, verify_push_token
from worker.sync.push import (
    mailbox_for_client_state,
    mailboxes_for_gmail_push,
    mailboxes_for_subscriptions,
    request_renewal,
)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)

MAX_VALIDATION_TOKEN = 1024
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


def _gmail_push_allowed() -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            verify_push_token(token.strip())
        except PushTokenError as exc:
            log.warning("gmail_push_refused reason=%s", exc)
            return False
        return True
    shared = get_settings().providers.gmail_push_token
    given = request.args.get("token", "")
    return shared is not None and hmac.compare_digest(shared.encode(), given.encode())


def _history_id(cursor: dict[str, Any] | None) -> int | None:
    value = (cursor or {}).get("history_id")
    return int(value) if isinstance(value, str | int) and str(value).isdigit() else None


@bp.post("/gmail")
def gmail_push() -> ResponseReturnValue:
    if not _gmail_push_allowed():
        return Response("push not verified", status=403, mimetype="text/plain")
    envelope = request.get_json(force=True, silent=True)
    try:
        data = envelope["message"]["data"]  # type: ignore[index]
        notice = json.loads(base64.b64decode(data, validate=True))
        address = str(notice["emailAddress"]).lower()
        history_id = int(notice["historyId"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        # A malformed message never becomes well-formed: acknowledge it, or Pub/Sub
        # redelivers it for days.
        log.warning("gmail_push_malformed")
        return Response(status=204)
    queued = 0
    for mailbox_id, cursor in mailboxes_for_gmail_push(address):
        seen = _history_id(cursor)
        if seen is not None and seen >= history_id:
            continue  # a redelivery, or a change the last sync already read
        queued += int(request_sync(mailbox_id, pushed=True))
    log.info("gmail_push history_id=%s queued=%s", history_id, queued)
    return Response(status=204)


@bp.post("/graph")
def graph_notification() -> ResponseReturnValue:
    token = request.args.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            return Response("validation token too long", status=400, mimetype="text/plain")
        return Response(token, status=200, mimetype="text/plain")
    data = _bounded_body(MAX_GRAPH_BODY)
    if data is None:
        return Response(
            f"at most {MAX_GRAPH_BODY} bytes per request", status=413, mimetype="text/plain"
        )
    try:
        body = json.loads(data)
    except ValueError:  # not JSON, or not UTF-8
        body = None
    notifications = body.get("value") if isinstance(body, dict) else None
    if not isinstance(notifications, list) or not notifications:
        return Response('expected {"value": [...]}', status=400, mimetype="text/plain")
    if len(notifications) > MAX_GRAPH_NOTIFICATIONS:
        return Response(
            f"at most {MAX_GRAPH_NOTIFICATIONS} notifications per request",
            status=413,
            mimetype="text/plain",
        )
    wanted = _verified_wants(notifications)
    if not wanted:
        # Not one clientState of ours: refused, without a query. (Graph would retry a
        # real one for up to 4 hours; a state we cannot verify never becomes one.)
        return Response(
            "no notification carried a clientState of ours", status=403, mimetype="text/plain"
        )
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
    return Response(status=202)


def _bounded_body(limit: int) -> bytes | None:
    """The request body, or None when it is longer than `limit` (declared or streamed).

    Reads at most `limit` + 1 bytes: a chunked body has no Content-Length to refuse
    by, and Werkzeug's own limit would cut such a body short silently.
    """
    if (request.content_length or 0) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = request.stream.read(min(65536, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks) if size <= limit else None


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
