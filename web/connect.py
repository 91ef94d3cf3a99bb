"""Connecting, reconnecting and disconnecting mailboxes: OAuth, Exchange credentials, the page.

Owns three blueprints:

- `api` (`/api/v1/mailboxes/...`, bearer token): start an OAuth connect or
  reconnect (answers the provider's consent URL), connect an Exchange mailbox,
  reconnect one with new credentials, disconnect one.
- `callbacks` (`/connect/<kind>/callback`): where Google (GET) and Microsoft
  (form_post) send the browser back. The `state` names a one-time record in
  Redis (10 minutes, Fernet-encrypted: it holds the PKCE verifier) saying which
  team, user and — for a reconnect — which mailbox the flow is for.
- `pages` (`/mailboxes`, signed-in users): the mailboxes page with the same
  actions as forms (CSRF-protected).

`connect_imap` is the one way an IMAP mailbox is connected: the API's
`POST /api/v1/mailboxes` and the web form `/mailboxes/imap` (`web.app.imap`)
both call it.

OAuth flow::

    POST …/connect {kind} ─▶ state + verifier in Redis ─▶ consent URL
    browser ─▶ Google / Microsoft ─▶ /connect/<kind>/callback?code&state
        ─▶ state popped (once) ─▶ code + verifier → tokens (provider module)
        ─▶ mailbox created or updated (a reconnect must be the same address)
        ─▶ first sync queued, push started (worker)

Disconnecting marks the mailbox `disabled` at once and leaves the rest to a
job (stop the watch or subscription, give the grant back, wipe the tokens);
the mailbox row and everything it recorded are kept. This module never holds a
token longer than the request, and never logs one.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from config import get_settings, queues
from core.crypto import decrypt_json, encrypt_json
from core.models import Mailbox, MailboxKind, MailboxStatus, utcnow
from core.redis import get_redis
from web.api import ApiError, error_response, parse_body, require_token
from web.api.schemas import (
    ExchangeMailboxCreate,
    MailboxCreate,
    MailboxOut,
    OAuthConnect,
    OAuthStarted,
)
from web.auth import current_user, login_required, protect
from web.db import db
from worker.sync.base import ProviderError

log = logging.getLogger(__name__)

api = Blueprint("connect_api", __name__, url_prefix="/api/v1/mailboxes")
callbacks = Blueprint("connect", __name__, url_prefix="/connect")
pages = Blueprint("mailboxes", __name__)
protect(pages)

STATE_SECONDS = 600
STATE_KEY = "sightline:connect:{state}"
OAUTH_KINDS = (MailboxKind.GMAIL, MailboxKind.GRAPH)
PROVIDER_NAMES = {
    "imap": "IMAP",
    "gmail": "Gmail",
    "exchange": "Exchange",
    "graph": "Microsoft 365",
}


@api.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.fields)


# -- what the flows share -------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    kind: str
    team_id: int
    user_id: int | None
    mailbox_id: int | None
    secret: Any  # the PKCE verifier (Google) or MSAL's flow (Microsoft)
    return_to: str | None


def redirect_uri(kind: str) -> str:
    return f"{get_settings().public_base_url}/connect/{kind}/callback"


def start_oauth(
    kind: str,
    *,
    team_id: int,
    user_id: int | None,
    mailbox_id: int | None = None,
    login_hint: str | None = None,
    return_to: str | None = None,
) -> str:
    """Remember a new flow and return the provider's consent URL. Raises ProviderError."""
    state = secrets.token_urlsafe(32)
    if kind == MailboxKind.GMAIL:
        from worker.sync import gmail

        url, secret = gmail.authorization_url(redirect_uri(kind), state, login_hint)
        kept: Any = secret
    elif kind == MailboxKind.GRAPH:
        from worker.sync import graph

        url, flow = graph.authorization_url(redirect_uri(kind), state, login_hint)
        kept = flow
    else:
        raise ValueError(f"{kind} mailboxes do not connect with OAuth")
    record = {
        "kind": kind,
        "team_id": team_id,
        "user_id": user_id,
        "mailbox_id": mailbox_id,
        "secret": kept,
        "return_to": return_to,
    }
    get_redis().set(STATE_KEY.format(state=state), encrypt_json(record), ex=STATE_SECONDS)
    log.info("connect_started kind=%s team_id=%s mailbox_id=%s", kind, team_id, mailbox_id)
    return url


def pop_pending(state: str) -> Pending | None:
    raw = get_redis().getdel(STATE_KEY.format(state=state)) if state else None
    if not raw:
        return None
    data = decrypt_json(raw.decode() if isinstance(raw, bytes) else str(raw))
    return Pending(
        kind=str(data["kind"]),
        team_id=int(data["team_id"]),
        user_id=data.get("user_id"),
        mailbox_id=data.get("mailbox_id"),
        secret=data.get("secret"),
        return_to=data.get("return_to"),
    )


def _after_connect(mailbox: Mailbox) -> None:
    """Queue the first sync and start push; wake the listener for Exchange."""
    from worker.listener import announce_mailbox_change
    from worker.sync.engine import request_sync
    from worker.sync.push import request_renewal

    request_sync(mailbox.id)
    if mailbox.kind in OAUTH_KINDS:
        request_renewal(mailbox.id)
    announce_mailbox_change()


def save_mailbox(
    *,
    team_id: int,
    user_id: int | None,
    kind: str,
    email: str,
    credentials: dict[str, Any],
    mailbox_id: int | None,
) -> Mailbox:
    """Create the mailbox, or give an existing one (same team and address) new credentials.

    Raises:
        ApiError: a reconnect signed in as another address, or the mailbox is gone.
    """
    session = db()
    email = email.lower()
    if mailbox_id is not None:
        mailbox = session.get(Mailbox, mailbox_id)
        if mailbox is None or mailbox.team_id != team_id:
            raise ApiError(404, "not_found", f"mailbox {mailbox_id} not found")
        if mailbox.email != email:
            raise ApiError(
                409,
                "wrong_account",
                f"you signed in as {email}, but this mailbox is {mailbox.email}",
                {"email": f"sign in as {mailbox.email}"},
            )
    else:
        mailbox = session.scalar(
            select(Mailbox).where(Mailbox.team_id == team_id, Mailbox.email == email)
        )
    if mailbox is not None and mailbox.kind != kind:
        existing = PROVIDER_NAMES.get(mailbox.kind, mailbox.kind)
        raise ApiError(409, "conflict", f"{email} is already connected as a {existing} mailbox")
    return _store(mailbox, team_id, user_id, kind, email, credentials)


def _store(
    mailbox: Mailbox | None,
    team_id: int,
    user_id: int | None,
    kind: str,
    email: str,
    credentials: dict[str, Any],
) -> Mailbox:
    """Save `credentials` (encrypted) on `mailbox`, or on a new one; mark it active; sync it."""
    session = db()
    if mailbox is None:
        mailbox = Mailbox(
            team_id=team_id, user_id=user_id, kind=kind, email=email, created_at=utcnow()
        )
        session.add(mailbox)
    mailbox.credentials_encrypted = encrypt_json(credentials)
    mailbox.status = MailboxStatus.ACTIVE
    mailbox.status_reason = None
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # another request connected it between our read and our write
        raise ApiError(409, "conflict", f"{email} is already connected") from None
    _after_connect(mailbox)
    log.info("mailbox_connected mailbox_id=%s kind=%s team_id=%s", mailbox.id, kind, team_id)
    return mailbox


def connect_imap(*, team_id: int, user_id: int | None, body: MailboxCreate) -> Mailbox:
    """Connect an IMAP + SMTP mailbox: the API's `POST /mailboxes` and the web form's one path.

    Logs in to both servers first (unless `body.verify` is false), then stores
    the credentials Fernet-encrypted and queues the first sync. The team's IMAP
    mailbox at the same address that needs reconnecting, failed or was
    disconnected is reconnected: it gets the new credentials and keeps its
    history. A working one is left alone.

    Raises:
        ApiError: 422 ``mailbox_unreachable`` (``fields`` names ``imap`` or ``smtp``:
            the server that refused, and why; never the password), 409 ``conflict``
            when the team already has this address connected and working, or
            connected with another provider.
    """
    credentials = {
        "imap": body.imap.model_dump(),
        "smtp": body.smtp.model_dump(),
        "folders": body.folders,
        "append_to_sent": body.append_to_sent,
    }
    email = body.email.lower()
    session = db()
    mailbox = session.scalar(
        select(Mailbox).where(Mailbox.team_id == team_id, Mailbox.email == email)
    )
    if mailbox is not None and mailbox.kind != body.kind:
        existing = PROVIDER_NAMES.get(mailbox.kind, mailbox.kind)
        raise ApiError(409, "conflict", f"{email} is already connected as a {existing} mailbox")
    if mailbox is not None and mailbox.status == MailboxStatus.ACTIVE:
        raise ApiError(409, "conflict", f"{email} is already connected")
    if body.verify:
        from worker.sync.registry import open_provider

        try:
            with open_provider(body.kind, email, credentials) as provider:
                provider.verify()
        except ProviderError as exc:
            server = "smtp" if str(exc).startswith("SMTP") else "imap"
            raise ApiError(422, "mailbox_unreachable", str(exc), {server: str(exc)}) from None
    return _store(mailbox, team_id, user_id, body.kind, email, credentials)


def finish_oauth(pending: Pending, values: dict[str, str]) -> Mailbox:
    """Trade the callback's answer for tokens and save the mailbox. Raises ApiError."""
    if values.get("error"):
        detail = values.get("error_description") or values["error"]
        raise ApiError(400, "not_connected", f"the provider did not connect the mailbox: {detail}")
    try:
        if pending.kind == MailboxKind.GMAIL:
            from worker.sync import gmail

            email, credentials = gmail.exchange_code(
                values.get("code", ""), redirect_uri(pending.kind), str(pending.secret)
            )
        else:
            from worker.sync import graph

            email, credentials = graph.exchange_code(dict(pending.secret), values)
    except ProviderError as exc:
        raise ApiError(400, "not_connected", str(exc)) from None
    return save_mailbox(
        team_id=pending.team_id,
        user_id=pending.user_id,
        kind=pending.kind,
        email=email,
        credentials=credentials,
        mailbox_id=pending.mailbox_id,
    )


def exchange_credentials(body: ExchangeMailboxCreate) -> dict[str, Any]:
    if body.auth == "oauth":
        return {"ews_url": body.ews_url, "auth": "oauth", "access_token": body.access_token}
    return {
        "ews_url": body.ews_url,
        "auth": body.auth,
        "username": body.username,
        "password": body.password,
    }


def verify_exchange(email: str, credentials: dict[str, Any]) -> None:
    from worker.sync.exchange import ExchangeProvider

    try:
        with ExchangeProvider(email, credentials) as provider:
            provider.verify()
    except ProviderError as exc:
        raise ApiError(422, "mailbox_unreachable", str(exc), {"ews_url": str(exc)}) from None


def disconnect(mailbox: Mailbox) -> None:
    """Disabled now; the job stops push, revokes and wipes the tokens."""
    from worker.listener import announce_mailbox_change
    from worker.queueing import enqueue
    from worker.sync.push import DISCONNECT_JOB

    mailbox.status = MailboxStatus.DISABLED
    mailbox.status_reason = "disconnected"
    db().commit()
    enqueue(queues.DEFAULT, DISCONNECT_JOB, mailbox.id)
    announce_mailbox_change()
    log.info("mailbox_disconnect_requested mailbox_id=%s", mailbox.id)


def _owned(mailbox_id: int, team_id: int) -> Mailbox:
    mailbox = db().get(Mailbox, mailbox_id)
    if mailbox is None or mailbox.team_id != team_id:
        raise ApiError(404, "not_found", f"mailbox {mailbox_id} not found")
    return mailbox


def _mailbox_json(mailbox: Mailbox) -> dict[str, Any]:
    return MailboxOut.model_validate(mailbox).model_dump(mode="json")


# -- API ------------------------------------------------------------------------------


@api.post("/connect")
@require_token
def api_connect() -> ResponseReturnValue:
    body = parse_body(OAuthConnect)
    try:
        url = start_oauth(
            body.kind,
            team_id=g.team_id,
            user_id=g.user.id,
            login_hint=body.login_hint,
            return_to=body.return_to,
        )
    except ProviderError as exc:
        raise ApiError(503, "provider_unavailable", str(exc)) from None
    return OAuthStarted(authorization_url=url, expires_in=STATE_SECONDS).model_dump()


@api.post("/exchange")
@require_token
def api_connect_exchange() -> ResponseReturnValue:
    body = parse_body(ExchangeMailboxCreate)
    credentials = exchange_credentials(body)
    if body.verify:
        verify_exchange(body.email, credentials)
    mailbox = save_mailbox(
        team_id=g.team_id,
        user_id=g.user.id,
        kind=MailboxKind.EXCHANGE,
        email=body.email,
        credentials=credentials,
        mailbox_id=None,
    )
    return _mailbox_json(mailbox), 201


@api.post("/<int:mailbox_id>/reconnect")
@require_token
def api_reconnect(mailbox_id: int) -> ResponseReturnValue:
    mailbox = _owned(mailbox_id, g.team_id)
    if mailbox.kind in OAUTH_KINDS:
        try:
            url = start_oauth(
                mailbox.kind,
                team_id=g.team_id,
                user_id=g.user.id,
                mailbox_id=mailbox.id,
                login_hint=mailbox.email,
            )
        except ProviderError as exc:
            raise ApiError(503, "provider_unavailable", str(exc)) from None
        return OAuthStarted(authorization_url=url, expires_in=STATE_SECONDS).model_dump()
    if mailbox.kind == MailboxKind.EXCHANGE:
        body = parse_body(ExchangeMailboxCreate)
        if body.email != mailbox.email:
            raise ApiError(
                422,
                "invalid_request",
                "email: must be the mailbox's address",
                {"email": mailbox.email},
            )
        credentials = exchange_credentials(body)
        if body.verify:
            verify_exchange(mailbox.email, credentials)
        saved = save_mailbox(
            team_id=g.team_id,
            user_id=g.user.id,
            kind=mailbox.kind,
            email=mailbox.email,
            credentials=credentials,
            mailbox_id=mailbox.id,
        )
        return _mailbox_json(saved)
    raise ApiError(
        422,
        "invalid_request",
        "kind: IMAP mailboxes are reconnected by connecting them again with POST /api/v1/mailboxes"
        " (the same address, new credentials)",
        {"kind": "imap"},
    )


@api.post("/<int:mailbox_id>/disconnect")
@require_token
def api_disconnect(mailbox_id: int) -> ResponseReturnValue:
    mailbox = _owned(mailbox_id, g.team_id)
    disconnect(mailbox)
    return _mailbox_json(mailbox)


# -- the providers' callbacks --------------------------------------------------------


@callbacks.route("/<kind>/callback", methods=["GET", "POST"])
def callback(kind: str) -> ResponseReturnValue:
    values = {k: str(v) for k, v in request.values.items()}
    pending = pop_pending(values.get("state", ""))
    if pending is None or pending.kind != kind:
        return _done(None, "This sign-in link has expired or was already used. Start again.", 400)
    try:
        mailbox = finish_oauth(pending, values)
    except ApiError as exc:
        return _done(pending.return_to, exc.message, exc.status)
    return _done(pending.return_to, None, 200, mailbox)


def _done(
    return_to: str | None, error: str | None, status: int, mailbox: Mailbox | None = None
) -> ResponseReturnValue:
    if return_to and error is None:
        return redirect(return_to)
    if request.accept_mimetypes.best == "application/json":
        if error is not None:
            return error_response(status, "not_connected", error)
        assert mailbox is not None
        return _mailbox_json(mailbox), status
    return (
        render_template("mailboxes_done.html", error=error, mailbox=mailbox, names=PROVIDER_NAMES),
        status,
    )


# -- the mailboxes page ---------------------------------------------------------------


@pages.get("/mailboxes")
@login_required
def page() -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    rows = (
        db()
        .scalars(select(Mailbox).where(Mailbox.team_id == user.team_id).order_by(Mailbox.id))
        .all()
    )
    providers = get_settings().providers
    return render_template(
        "mailboxes.html",
        mailboxes=rows,
        names=PROVIDER_NAMES,
        google=providers.google_configured,
        microsoft=providers.microsoft_configured,
        message=request.args.get("message"),
    )


@pages.post("/mailboxes/connect/<kind>")
@login_required
def page_connect(kind: str) -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    if kind not in OAUTH_KINDS:
        return redirect(url_for("mailboxes.page", message="Unknown provider."))
    try:
        url = start_oauth(
            kind, team_id=user.team_id, user_id=user.id, return_to=url_for("mailboxes.page")
        )
    except ProviderError as exc:
        return redirect(url_for("mailboxes.page", message=str(exc)))
    return redirect(url)


@pages.post("/mailboxes/exchange")
@login_required
def page_connect_exchange() -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    form = {k: v for k, v in request.form.items() if k != "csrf_token" and v}
    try:
        body = ExchangeMailboxCreate.model_validate(form)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}" for e in exc.errors()
        )
        return redirect(url_for("mailboxes.page", message=fields))
    try:
        credentials = exchange_credentials(body)
        verify_exchange(body.email, credentials)
        save_mailbox(
            team_id=user.team_id,
            user_id=user.id,
            kind=MailboxKind.EXCHANGE,
            email=body.email,
            credentials=credentials,
            mailbox_id=None,
        )
    except ApiError as exc:
        return redirect(url_for("mailboxes.page", message=exc.message))
    return redirect(url_for("mailboxes.page", message=f"{body.email} is connected."))


@pages.post("/mailboxes/<int:mailbox_id>/reconnect")
@login_required
def page_reconnect(mailbox_id: int) -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    try:
        mailbox = _owned(mailbox_id, user.team_id)
        if mailbox.kind in OAUTH_KINDS:
            url = start_oauth(
                mailbox.kind,
                team_id=user.team_id,
                user_id=user.id,
                mailbox_id=mailbox.id,
                login_hint=mailbox.email,
                return_to=url_for("mailboxes.page"),
            )
            return redirect(url)
        if mailbox.kind == MailboxKind.EXCHANGE:
            stored = decrypt_json(mailbox.credentials_encrypted)
            credentials = {**stored, "password": request.form.get("password", "")}
            verify_exchange(mailbox.email, credentials)
            save_mailbox(
                team_id=user.team_id,
                user_id=user.id,
                kind=mailbox.kind,
                email=mailbox.email,
                credentials=credentials,
                mailbox_id=mailbox.id,
            )
            return redirect(
                url_for("mailboxes.page", message=f"{mailbox.email} is connected again.")
            )
    except (ApiError, ProviderError) as exc:
        message = exc.message if isinstance(exc, ApiError) else str(exc)
        return redirect(url_for("mailboxes.page", message=message))
    # IMAP: the connect form, filled in with the stored servers (never the passwords).
    return redirect(url_for("imap.connect", mailbox_id=mailbox_id))


@pages.post("/mailboxes/<int:mailbox_id>/disconnect")
@login_required
def page_disconnect(mailbox_id: int) -> ResponseReturnValue:
    user = current_user()
    assert user is not None
    try:
        mailbox = _owned(mailbox_id, user.team_id)
    except ApiError as exc:
        return redirect(url_for("mailboxes.page", message=exc.message))
    disconnect(mailbox)
    return redirect(url_for("mailboxes.page", message=f"{mailbox.email} is disconnected."))


def init_app(app: Any) -> None:
    app.register_blueprint(api)
    app.register_blueprint(callbacks)
    app.register_blueprint(pages)


__all__ = ["api", "callbacks", "init_app", "pages"]


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """Add the connect routes and their schemas to the OpenAPI document (web/api/openapi.py)."""
    ref = "#/components/schemas/{model}"
    schemas = document["components"]["schemas"]
    for model, mode in (
        (OAuthConnect, "validation"),
        (OAuthStarted, "serialization"),
        (ExchangeMailboxCreate, "validation"),
    ):
        schema = model.model_json_schema(ref_template=ref, mode=mode)  # type: ignore[arg-type]
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema

    def content(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": ref.format(model=name)}}}

    def errors(*statuses: int) -> dict[str, Any]:
        text = {
            400: "Body is not valid JSON",
            401: "Missing or unknown API token",
            404: "Not found (or not your team's)",
            409: "Another address, or already connected",
            415: "Body is not JSON",
            422: "Invalid field (named in error.fields), or the server refused the credentials",
            503: "The provider's sign-in is unreachable",
        }
        return {str(s): {"description": text[s], "content": content("ErrorOut")} for s in statuses}

    mailbox_id = {
        "name": "mailbox_id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    }
    started = {
        "description": "Send the user to authorization_url",
        "content": content("OAuthStarted"),
    }
    mailbox = {"description": "The mailbox", "content": content("MailboxOut")}
    paths = document["paths"]
    paths["/mailboxes/connect"] = {
        "post": {
            "summary": "Start connecting a Gmail or Microsoft 365 mailbox (OAuth)",
            "requestBody": {"required": True, "content": content("OAuthConnect")},
            "responses": {"200": started, **errors(400, 401, 415, 422, 503)},
        }
    }
    paths["/mailboxes/exchange"] = {
        "post": {
            "summary": "Connect an Exchange on-premises mailbox (EWS)",
            "requestBody": {"required": True, "content": content("ExchangeMailboxCreate")},
            "responses": {"201": mailbox, **errors(400, 401, 409, 415, 422)},
        }
    }
    paths["/mailboxes/{mailbox_id}/reconnect"] = {
        "post": {
            "summary": "Reconnect: an OAuth link (Gmail, Microsoft 365) or Exchange credentials",
            "parameters": [mailbox_id],
            "requestBody": {"required": False, "content": content("ExchangeMailboxCreate")},
            "responses": {
                "200": {**started, "description": "OAuthStarted, or the Exchange mailbox"},
                **errors(401, 404, 409, 422, 503),
            },
        }
    }
    paths["/mailboxes/{mailbox_id}/disconnect"] = {
        "post": {
            "summary": "Disconnect: stop watching, give the grant back, keep the history",
            "parameters": [mailbox_id],
            "responses": {"200": mailbox, **errors(401, 404)},
        }
    }
    return document
