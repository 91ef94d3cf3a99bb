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
                           notifications → each one's clientState must be the HMAC
                           for its mailbox, else it is dropped; lifecycle events
                           (reauthorizationRequired, subscriptionRemoved) renew the
                           subscription, `missed` syncs; 202 acknowledges.
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
from worker.sync.push import (
    client_state_matches,
    mailbox_for_subscription,
    mailboxes_for_gmail_push,
    request_renewal,
)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)

MAX_VALIDATION_TOKEN = 1024


def _gmail_push_allowed() -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        from worker.sync.gmail import PushTokenError, verify_push_token

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
        queued += int(request_sync(mailbox_id))
    log.info("gmail_push history_id=%s queued=%s", history_id, queued)
    return Response(status=204)


@bp.post("/graph")
def graph_notification() -> ResponseReturnValue:
    token = request.args.get("validationToken")
    if token is not None:
        if len(token) > MAX_VALIDATION_TOKEN:
            return Response("validation token too long", status=400, mimetype="text/plain")
        return Response(token, status=200, mimetype="text/plain")
    body = request.get_json(force=True, silent=True)
    notifications = body.get("value") if isinstance(body, dict) else None
    if not isinstance(notifications, list):
        return Response('expected {"value": [...]}', status=400, mimetype="text/plain")
    accepted = 0
    for notification in notifications:
        if not isinstance(notification, dict):
            continue
        mailbox_id = mailbox_for_subscription(str(notification.get("subscriptionId", "")))
        if mailbox_id is None:
            continue
        given = str(notification.get("clientState") or "")
        if not client_state_matches(mailbox_id, given):
            log.warning("graph_notification_refused mailbox_id=%s reason=client_state", mailbox_id)
            continue
        event = notification.get("lifecycleEvent")
        if event in ("reauthorizationRequired", "subscriptionRemoved"):
            request_renewal(mailbox_id)
        else:  # a change, or "missed": either way, read what is new
            request_sync(mailbox_id)
        accepted += 1
    log.info("graph_notifications received=%s accepted=%s", len(notifications), accepted)
    return Response(status=202)
