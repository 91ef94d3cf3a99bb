"""Connecting, reconnecting and disconnecting mailboxes: OAuth, Exchange credentials, the page.

Owns two blueprints:

- `api` (`/api/v1/mailboxes/...`, bearer token): start an OAuth connect or
  reconnect (answers a one-time start link on this site), connect an Exchange
  mailbox, reconnect one with new credentials, disconnect one.
- `pages` (`/mailboxes`, signed-in users): the mailboxes page with the same
  actions as forms (CSRF-protected).

The OAuth flows' binding to the browser and person who started them, the
providers' callbacks and the confirm step are `web.oauth_flow`'s; this module
is the Gmail and Microsoft 365 `FlowKind` there (`MailboxFlow`).

`connect_imap` is the one way an IMAP mailbox is connected: the API's
`POST /api/v1/mailboxes` and the web form `/mailboxes/imap` (`web.app.imap`)
both call it.

OAuth flow::

    POST …/connect {kind} ─▶ verifier + mailbox id in a flow (web.oauth_flow)
        ─▶ start link /connect/start/<id>, opened by the same user, signed in
    browser ─▶ Google / Microsoft ─▶ /connect/<kind>/callback (same browser and user only)
        ─▶ code + verifier → tokens (provider module); the address checked
           (a reconnect must be the same address) ─▶ "Connect dana@… (Gmail) to team Acme?"
        ─▶ Connect: mailbox created or updated, first sync queued, push started (worker)
        ─▶ Cancel: Google's grant revoked (unless a mailbox here uses it), tokens forgotten

Disconnecting marks the mailbox `disabled` at once and leaves the rest to a
job (stop the watch or subscription, give the grant back, wipe the tokens);
the mailbox row and everything it recorded are kept. A connect's tokens wait
for the person's Connect only in web.oauth_flow's confirm record (encrypted, ten
minutes); this module never logs one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
from core.outbound import OutboundError, resolve, resolve_url
from web import oauth_flow
from web.api.common import ApiError, error_response, parse_body, require_token
from web.api.schemas import (
    ExchangeMailboxCreate,
    MailboxCreate,
    MailboxOut,
    OAuthConnect,
    OAuthStarted,
)
from web.auth import current_user, login_required, protect
from web.db import db
from web.oauth_flow import Flow, FlowError, Proposal, Saved
from web.redirects import safe_redirect_path
from worker.sync import quarantine
from worker.sync.base import ProviderError

log = logging.getLogger(__name__)

api = Blueprint("connect_api", __name__, url_prefix="/api/v1/mailboxes")
pages = Blueprint("mailboxes", __name__)
protect(pages)

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


def redirect_uri(kind: str) -> str:
    return f"{get_settings().public_base_url}/connect/{kind}/callback"


def start_oauth(
    kind: str,
    *,
    team_id: int,
    user_id: int,
    mailbox_id: int | None = None,
    login_hint: str | None = None,
    return_to: str | None = None,
) -> str:
    """Start a flow for `user_id`; return its start link (web.oauth_flow). Raises ProviderError.

    Only that user, signed in, can open the link; the browser that opens it is
    the only one that can finish the flow.
    """
    state = oauth_flow.new_state()
    # The provider SDKs (google-api-python-client, MSAL) cost the web process ~0.2 s to
    # import: paid at the first connect, not at every start.
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
    data = {"secret": kept, "mailbox_id": mailbox_id, "return_to": return_to}
    return oauth_flow.begin(
        kind, state=state, team_id=team_id, user_id=user_id, consent_url=url, data=data
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
    email = email.lower()
    mailbox = _target(team_id, kind, email, mailbox_id)
    return _store(mailbox, team_id, user_id, kind, email, credentials)


def _target(team_id: int, kind: str, email: str, mailbox_id: int | None) -> Mailbox | None:
    """The team's mailbox that `email` would connect (None: a new one). Raises ApiError."""
    session = db()
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
    return mailbox


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
    # Even unverified, a server the outbound policy refuses is never saved: the sync
    # would be refused later anyway, and the team should hear it now.
    check_server("imap", body.imap.host, body.imap.port)
    check_server("smtp", body.smtp.host, body.smtp.port)
    if body.verify:
        from worker.sync.registry import open_provider

        try:
            with open_provider(body.kind, email, credentials) as provider:
                provider.verify()
        except ProviderError as exc:
            server = "smtp" if str(exc).startswith("SMTP") else "imap"
            raise ApiError(422, "mailbox_unreachable", str(exc), {server: str(exc)}) from None
    return _store(mailbox, team_id, user_id, body.kind, email, credentials)


class MailboxFlow:
    """Gmail and Microsoft 365 in web.oauth_flow: tokens for a mailbox, saved once confirmed."""

    start_again = "Start again from the Mailboxes page (or the API), in this browser."

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.label = PROVIDER_NAMES[kind]

    @property
    def start_page(self) -> tuple[str, str]:
        return url_for("mailboxes.page"), "Mailboxes"

    def finish(self, flow: Flow, values: Mapping[str, str]) -> Proposal:
        """Trade the answer for tokens; check the address fits (a reconnect: the same one)."""
        if values.get("error"):
            detail = values.get("error_description") or values["error"]
            raise FlowError(400, f"{self.label} did not connect the mailbox: {detail}")
        secret = flow.data.get("secret")
        try:
            if self.kind == MailboxKind.GMAIL:
                from worker.sync import gmail

                email, credentials = gmail.exchange_code(
                    values.get("code", ""), redirect_uri(self.kind), str(secret)
                )
            else:
                from worker.sync import graph

                email, credentials = graph.exchange_code(dict(secret or {}), dict(values))
        except ProviderError as exc:
            raise FlowError(400, str(exc)) from None
        mailbox_id = flow.data.get("mailbox_id")
        proposal = Proposal(
            kind=self.kind,
            team_id=flow.team_id,
            user_id=flow.user_id,
            verb="Reconnect" if mailbox_id is not None else "Connect",
            subject=f"{email} ({self.label})",
            detail="Sightline will read this mailbox's replies and bounces, and send your "
            "emails and sequence steps from it.",
            data={
                "email": email,
                "credentials": credentials,
                "mailbox_id": mailbox_id,
                "return_to": flow.data.get("return_to"),
            },
        )
        try:
            _target(flow.team_id, self.kind, email, mailbox_id)
        except ApiError as exc:
            self.discard(proposal)
            raise FlowError(exc.status, exc.message) from None
        return proposal

    def save(self, proposal: Proposal) -> Saved:
        data = proposal.data
        try:
            mailbox = save_mailbox(
                team_id=proposal.team_id,
                user_id=proposal.user_id,
                kind=self.kind,
                email=str(data["email"]),
                credentials=dict(data["credentials"]),
                mailbox_id=data.get("mailbox_id"),
            )
        except ApiError as exc:
            raise FlowError(exc.status, exc.message) from None
        # Checked when the flow started (the API's 422); checked again here because
        # the stored flow outlives a release that tightens the rule.
        return_to = data.get("return_to")
        return Saved(
            f"{mailbox.email} ({self.label}) is connected. Replies to your emails will be seen "
            "within seconds.",
            safe_redirect_path(return_to) if return_to else None,
        )

    def discard(self, proposal: Proposal) -> None:
        """Google: revoke, unless a mailbox here uses the account (Google revokes the whole
        grant, which would disconnect it). Microsoft has no per-grant revocation: forgotten."""
        email = str(proposal.data.get("email", ""))
        if self.kind != MailboxKind.GMAIL or _in_use(self.kind, email):
            return
        from worker.sync import gmail

        gmail.GmailProvider(email, dict(proposal.data.get("credentials") or {})).revoke()


def _in_use(kind: str, email: str) -> bool:
    """Whether a mailbox of any team holds a grant for this account."""
    found = db().scalar(
        select(Mailbox.id).where(
            Mailbox.kind == kind,
            Mailbox.email == email.lower(),
            Mailbox.status != MailboxStatus.DISABLED,
        )
    )
    return found is not None


for _kind in OAUTH_KINDS:
    oauth_flow.register(_kind, MailboxFlow(_kind))


def refused(field: str, exc: OutboundError) -> ApiError:
    """The 422 for a destination the outbound policy (core.outbound) refuses."""
    code = "address_not_allowed" if exc.permanent else "mailbox_unreachable"
    return ApiError(422, code, str(exc), {field: str(exc)})


def check_server(field: str, host: str, port: int) -> None:
    """Raise a 422 naming `field` ("imap", "smtp") if the policy refuses host:port."""
    try:
        resolve(host, port, purpose=field.upper())
    except OutboundError as exc:
        raise refused(
            field, OutboundError(f"{field.upper()} server {exc}", permanent=exc.permanent)
        ) from None


def exchange_credentials(body: ExchangeMailboxCreate) -> dict[str, Any]:
    """The credentials to store; a 422 first if the policy refuses the EWS URL."""
    try:
        resolve_url(body.ews_url, purpose="Exchange", schemes=("https", "http"))
    except OutboundError as exc:
        raise refused("ews_url", OutboundError(f"EWS URL {exc}", permanent=exc.permanent)) from None
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
    held = quarantine.counts(db(), [mailbox.id]).get(mailbox.id, 0)
    out = MailboxOut.model_validate(mailbox).model_copy(update={"quarantined": held})
    return out.model_dump(mode="json")


def _started(start_path: str) -> dict[str, Any]:
    """The API's answer to a started flow: the start link on this site, never the provider's."""
    url = oauth_flow.absolute(start_path)
    return OAuthStarted(authorization_url=url, expires_in=oauth_flow.FLOW_SECONDS).model_dump()


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
    return _started(url)


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
        return _started(url)
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


# -- the mailboxes page ---------------------------------------------------------------


@pages.get("/mailboxes")
@login_required
def page() -> ResponseReturnValue:
    return _page(request.args.get("message"))


def _page(message: str | None, status: int = 200) -> ResponseReturnValue:
    """The mailboxes page with `message`; an error is shown with its 4xx, not redirected."""
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
        held=_held_back(list(rows)),
        message=message,
    ), status


@dataclass(frozen=True)
class _HeldBack:
    """A mailbox's quarantined messages as its row on the page shows them."""

    count: int
    newest: list[dict[str, str]]  # sender, subject, what happened and happens next


def _held_back(mailboxes: list[Mailbox]) -> dict[int, _HeldBack]:
    """Per mailbox with any: how many messages the sync keeps but could not read, newest 3."""
    counts = quarantine.counts(db(), [m.id for m in mailboxes])
    return {
        mailbox_id: _HeldBack(
            count,
            [
                {
                    "sender": row.from_addr or "unknown sender",
                    "subject": row.subject or "(no subject)",
                    "summary": quarantine.describe(row.error, row.details),
                }
                for row in quarantine.newest(db(), mailbox_id, 3)
            ],
        )
        for mailbox_id, count in counts.items()
    }


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
    return redirect(url, code=303)


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
        return _page(fields, 422)
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
        return _page(exc.message, exc.status)
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
            return redirect(url, code=303)
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
    except ApiError as exc:
        return _page(exc.message, exc.status)
    except ProviderError as exc:  # the OAuth provider's sign-in is unreachable
        return redirect(url_for("mailboxes.page", message=str(exc)))
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
    app.register_blueprint(pages)


__all__ = ["api", "init_app", "pages"]


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
        "description": "authorization_url is a one-time start link on this site: the same "
        "user opens it in a browser, signed in to Sightline; it goes on to Google or "
        "Microsoft, and the connect is finished (and confirmed) in that browser only",
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
