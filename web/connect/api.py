"""The mailbox connect API, `/api/v1/mailboxes/...` (bearer token).

Start an OAuth connect or reconnect (answers a one-time start link on this
site, `web.connect.oauth`), connect an Exchange mailbox, reconnect one with new
credentials, disconnect one. IMAP mailboxes are connected by
`POST /api/v1/mailboxes` (web/api/routes.py). What is stored and started is
`worker.sync.connecting`'s; its refusals answer with `web.api.common.CONNECT_STATUS`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g
from flask.typing import ResponseReturnValue

from core.models import Mailbox, MailboxKind
from web import oauth_flow
from web.api.common import (
    ApiError,
    connect_error_response,
    error_response,
    parse_body,
)
from web.api.operations import Answer, operation
from web.api.schemas import ExchangeMailboxCreate, MailboxOut, OAuthConnect, OAuthStarted
from web.connect.oauth import start_oauth
from web.db import db
from worker.sync import quarantine
from worker.sync.base import ProviderError
from worker.sync.connecting import OAUTH_KINDS, ConnectError, connect_exchange, disconnect

api = Blueprint("connect_api", __name__, url_prefix="/api/v1/mailboxes")


STARTED = (
    "authorization_url is a one-time start link on this site: the same user opens it in a "
    "browser, signed in to Sightline; it goes on to Google or Microsoft, and the connect is "
    "finished (and confirmed) in that browser only"
)
REFUSED = "Invalid field (named in error.fields), or the server refused the credentials"
UNREACHABLE = "The provider's sign-in is unreachable"
CONFLICT = "Another address, or already connected"


@api.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.fields)


@api.errorhandler(ConnectError)
def _connect_error(exc: ConnectError) -> Response:
    return connect_error_response(exc)


def _owned(mailbox_id: int, team_id: int) -> Mailbox:
    mailbox = db().get(Mailbox, mailbox_id)
    if mailbox is None or mailbox.team_id != team_id:
        raise ApiError(404, "not_found", f"mailbox {mailbox_id} not found")
    return mailbox


def _mailbox_json(mailbox: Mailbox) -> dict[str, Any]:
    held = quarantine.counts(db(), [mailbox.id]).get(mailbox.id, 0)
    out = MailboxOut.model_validate(mailbox).model_copy(update={"quarantined": held})
    return out.model_dump(mode="json")


def _start(kind: str, **flow: Any) -> dict[str, Any]:
    """Start the signed-in user's OAuth flow for `kind`; the API's answer.

    The answer is the start link on this site, never the provider's.
    """
    try:
        start_path = start_oauth(kind, team_id=g.team_id, user_id=g.user.id, **flow)
    except ProviderError as exc:
        raise ApiError(503, "provider_unavailable", str(exc)) from None
    url = oauth_flow.absolute(start_path)
    return OAuthStarted(authorization_url=url, expires_in=oauth_flow.FLOW_SECONDS).model_dump()


@operation(
    "POST",
    "/connect",
    summary="Start connecting a Gmail or Microsoft 365 mailbox (OAuth)",
    body=OAuthConnect,
    response=OAuthStarted,
    response_description=STARTED,
    errors={422: REFUSED, 503: UNREACHABLE},
    blueprint=api,
)
def api_connect() -> ResponseReturnValue:
    body = parse_body(OAuthConnect)
    return _start(body.kind, login_hint=body.login_hint, return_to=body.return_to)


@operation(
    "POST",
    "/exchange",
    summary="Connect an Exchange on-premises mailbox (EWS)",
    body=ExchangeMailboxCreate,
    response=MailboxOut,
    status=201,
    response_description="The mailbox",
    errors={409: CONFLICT, 422: REFUSED},
    blueprint=api,
)
def api_connect_exchange() -> ResponseReturnValue:
    body = parse_body(ExchangeMailboxCreate)
    mailbox = connect_exchange(
        db(),
        team_id=g.team_id,
        user_id=g.user.id,
        email=body.email,
        credentials=body.credentials(),
        verify=body.verify,
    )
    return _mailbox_json(mailbox), 201


@operation(
    "POST",
    "/<int:mailbox_id>/reconnect",
    summary="Reconnect: an OAuth link (Gmail, Microsoft 365) or Exchange credentials",
    body=ExchangeMailboxCreate,
    body_required=False,
    answers=[
        Answer(200, OAuthStarted, "OAuthStarted, or the Exchange mailbox", any_of=(MailboxOut,))
    ],
    errors={409: CONFLICT, 422: REFUSED, 503: UNREACHABLE},
    blueprint=api,
)
def api_reconnect(mailbox_id: int) -> ResponseReturnValue:
    mailbox = _owned(mailbox_id, g.team_id)
    if mailbox.kind in OAUTH_KINDS:
        return _start(mailbox.kind, mailbox_id=mailbox.id, login_hint=mailbox.email)
    if mailbox.kind == MailboxKind.EXCHANGE:
        body = parse_body(ExchangeMailboxCreate)
        if body.email != mailbox.email:
            raise ApiError(
                422,
                "invalid_request",
                "email: must be the mailbox's address",
                {"email": mailbox.email},
            )
        saved = connect_exchange(
            db(),
            team_id=g.team_id,
            user_id=g.user.id,
            email=mailbox.email,
            credentials=body.credentials(),
            mailbox_id=mailbox.id,
            verify=body.verify,
        )
        return _mailbox_json(saved)
    raise ApiError(
        422,
        "invalid_request",
        "kind: IMAP mailboxes are reconnected by connecting them again with POST /api/v1/mailboxes"
        " (the same address, new credentials)",
        {"kind": "imap"},
    )


@operation(
    "POST",
    "/<int:mailbox_id>/disconnect",
    summary="Disconnect: stop watching, give the grant back, keep the history",
    response=MailboxOut,
    response_description="The mailbox",
    blueprint=api,
)
def api_disconnect(mailbox_id: int) -> ResponseReturnValue:
    mailbox = _owned(mailbox_id, g.team_id)
    disconnect(db(), mailbox)
    return _mailbox_json(mailbox)
