"""A provider's consent (OAuth), bound to the browser and person who started it; the confirm step.

Gmail, Microsoft 365 and Salesforce connect through a consent page at the
provider. Whoever finishes that page chooses *which* mailbox or org is
connected; this module makes sure they cannot choose *into which team*. A flow
is finished only in the browser that started it, by the signed-in person who
started it, and nothing is saved until that person has seen what the provider
connected and pressed Connect::

    start (the page's form, or the API: no browser yet)
      └▶ flow record under a fresh `state`, and a one-time start id ─▶ /connect/start/<id>
    GET /connect/start/<id>, signed in as the starter
      └▶ cookie sl_connect = random nonce (HttpOnly, SameSite=Lax, Path=/connect);
         sha256(nonce) bound to the state (the first browser wins) ─▶ on to the provider
    the provider ─▶ our redirect URI with code and state
      Google:     GET  /connect/gmail/callback          (a top-level GET: cookies come along)
      Microsoft:  POST /connect/graph/callback          (form_post, cross-site: no cookies)
      Salesforce: GET  /api/v1/salesforce/oauth/callback (outside the cookie's path)
        └▶ the last two park the answer under a one-time relay id, 303 to
           GET /connect/<kind>/callback?relay=<id>, where the cookies come along
    callback: the same browser? the same signed-in person? ─ no ─▶ 401/403 page; the flow
      │                                                         stays, the code is refused
      └▶ yes: the flow claimed (GETDEL); code → tokens, nothing saved
         └▶ proposal (encrypted) ─▶ 303 /connect/confirm/<id>
    GET  /connect/confirm/<id>: "Connect dana@example.com (Gmail) to team Acme?"
    POST /connect/confirm/<id> (CSRF; the same browser and person): Connect saves,
         Cancel gives the grant back (where that harms nothing else) and forgets it

Redis keys (`sightline:oauth:<what>:<id>`, all expiring): `flow` and `start`
(10 minutes; the flow Fernet-encrypted: it holds the PKCE verifier), `bound`
(the browser's hash), `relay` (2 minutes, encrypted), `confirm` (10 minutes,
encrypted: it holds the tokens), `refused` (a code's hash, 15 minutes).

Why a wrong browser leaves the flow alone: a consent link travels (mail, chat,
a shoulder); whoever else opens it must neither finish the starter's connect
nor spoil it. Why a code that reached a wrong browser is refused from then on:
a person told "another browser" may send that page's address back to the one
who sent them the link, whose browser would otherwise finish with their code.

Each provider registers a `FlowKind` (web.connect.oauth: Gmail and Microsoft 365;
web.salesforce_connect: Salesforce): how to start again, how to trade the
answer for a proposal, how to save or discard one.

Must never: save a grant before the confirm POST, put a token in a page or a
URL, or log a token, a code or a nonce.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Blueprint, Flask, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from config import get_settings
from core.crypto import CredentialsError, decrypt_json, encrypt_json
from core.models import Team
from core.redis import get_redis
from web.auth import current_user, login_required, protect
from web.db import db

log = logging.getLogger(__name__)

flows = Blueprint("connect", __name__, url_prefix="/connect")
confirms = Blueprint("connect_confirm", __name__, url_prefix="/connect/confirm")
protect(confirms)

FLOW_SECONDS = 600
RELAY_SECONDS = 120
CONFIRM_SECONDS = 600
REFUSED_CODE_SECONDS = 900  # longer than any provider's code lives (Salesforce's: 15 minutes)
COOKIE = "sl_connect"
COOKIE_PATH = "/connect"
KEY = "sightline:oauth:{what}:{id}"
# What a provider's answer may hold: a few short fields (code, state, session_state …).
MAX_FIELDS = 20
MAX_FIELD_LENGTH = 4096
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


class FlowError(Exception):
    """The provider's answer cannot be connected; `message` tells the person why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Flow:
    """A started consent: who started it, for which team, and what the provider needs back."""

    kind: str
    team_id: int
    user_id: int
    data: dict[str, Any]  # the kind's own: PKCE verifier or MSAL flow, mailbox id, login URL …


@dataclass(frozen=True)
class Proposal:
    """A finished consent waiting for Connect or Cancel; `data` (tokens) only stored encrypted."""

    kind: str
    team_id: int
    user_id: int
    verb: str  # "Connect" or "Reconnect"
    subject: str  # what the provider connected, as it said: "dana@example.com (Gmail)"
    detail: str  # what connecting it lets Sightline do
    data: dict[str, Any]


@dataclass(frozen=True)
class Saved:
    message: str
    return_to: str | None = None


class FlowKind(Protocol):
    """One provider's part of the flow."""

    @property
    def label(self) -> str:
        """The provider's name for pages: "Gmail", "Salesforce"."""

    @property
    def start_again(self) -> str:
        """A sentence: where a person starts a new flow."""

    @property
    def start_page(self) -> tuple[str, str] | None:
        """(path, name) of the page to start from, if there is one."""

    def finish(self, flow: Flow, values: Mapping[str, str]) -> Proposal:
        """Trade the provider's answer for tokens and say what would be connected; save nothing.

        Raises:
            FlowError: the provider refused, or the answer cannot be connected to this team.
        """

    def save(self, proposal: Proposal) -> Saved:
        """Connect what the person confirmed. Raises FlowError."""

    def discard(self, proposal: Proposal) -> None:
        """Give the grant back (where that harms nothing else) and forget it. Never raises."""


KINDS: dict[str, FlowKind] = {}

# reason → (status, what happened, and what to do)
REFUSALS: dict[str, tuple[int, str]] = {
    "expired": (
        400,
        "This sign-in link has expired or was already used, so nothing was connected.",
    ),
    "other_browser": (
        403,
        "This connection was started in another browser. It can only be finished in the "
        "browser that started it, by the person who started it, so nothing was connected. "
        "If someone sent you this link, you need do nothing more; do not send them the "
        "address of this page.",
    ),
    "signed_out": (
        401,
        "You are not signed in to Sightline, so nothing was connected. Sign in, then start again.",
    ),
    "other_user": (
        403,
        "This connection was started by another Sightline user, so nothing was connected. "
        "Sign in as the person who started it, or start again yourself.",
    ),
    "opened_elsewhere": (
        409,
        "This link was already opened in another browser; it works in one browser only, so "
        "nothing was connected here.",
    ),
    "code_seen_elsewhere": (
        403,
        "This answer from the provider was first opened in another browser, so it cannot "
        "be used and nothing was connected.",
    ),
    "unreadable": (400, "The provider's answer could not be read, so nothing was connected."),
}


def register(kind: str, handler: FlowKind) -> None:
    KINDS[kind] = handler


# -- starting -------------------------------------------------------------------------


def new_state() -> str:
    """The `state` to put in the provider's consent URL (and to pass to `begin`)."""
    return secrets.token_urlsafe(32)


def begin(
    kind: str,
    *,
    state: str,
    team_id: int,
    user_id: int,
    consent_url: str,
    data: dict[str, Any],
) -> str:
    """Remember a started flow; return the path of its one-time start link (/connect/start/<id>).

    Nobody is sent to `consent_url` but the starter, signed in, from that link.
    """
    start_id = secrets.token_urlsafe(24)
    record = {
        "kind": kind,
        "team_id": team_id,
        "user_id": user_id,
        "start_id": start_id,
        "consent_url": consent_url,
        "data": data,
    }
    pipe = get_redis().pipeline()
    pipe.set(_key("flow", state), encrypt_json(record), ex=FLOW_SECONDS)
    pipe.set(_key("start", start_id), state, ex=FLOW_SECONDS)
    pipe.execute()
    log.info("connect_started kind=%s team_id=%s user_id=%s", kind, team_id, user_id)
    return url_for("connect.start", start_id=start_id)


def absolute(path: str) -> str:
    """A path of ours as a link to hand out (the API answers these)."""
    return get_settings().public_base_url + path


@flows.get("/start/<start_id>")
@login_required
def start(start_id: str) -> ResponseReturnValue:
    """Bind this browser to the flow (first browser wins), then go on to the provider."""
    redis = get_redis()
    state = _text(redis.get(_key("start", start_id))) if _ID.fullmatch(start_id) else None
    record = _load("flow", state) if state else None
    if state is None or record is None:
        return _refuse("expired", None)
    kind = str(record["kind"])
    if not _is_starter(int(record["user_id"]), int(record["team_id"])):
        log.warning("connect_start_refused kind=%s reason=other_user", kind)
        return _refuse("other_user", kind)
    nonce = _browser_nonce()
    digest = _digest(nonce)
    left = int(redis.ttl(_key("flow", state)))
    bound = left > 0 and redis.set(_key("bound", state), digest, ex=left, nx=True)
    if not bound:
        already = _text(redis.get(_key("bound", state)))
        if already is None:
            return _refuse("expired", kind)
        if not hmac.compare_digest(already, digest):
            log.warning("connect_start_refused kind=%s reason=opened_elsewhere", kind)
            return _refuse("opened_elsewhere", kind)
    handler = KINDS[kind]
    page = render_template(
        "connect/start.html", consent_url=str(record["consent_url"]), label=handler.label
    )
    response = make_response(page)
    response.headers["Cache-Control"] = "no-store"
    response.set_cookie(
        COOKIE,
        nonce,
        max_age=FLOW_SECONDS + CONFIRM_SECONDS,
        path=COOKIE_PATH,
        secure=get_settings().public_base_url.startswith("https://"),
        httponly=True,
        samesite="Lax",
    )
    return response


# -- the provider's answer ------------------------------------------------------------


@flows.route("/<kind>/callback", methods=["GET", "POST"])
def callback(kind: str) -> ResponseReturnValue:
    handler = KINDS.get(kind)
    if handler is None:
        return _refuse("expired", None, status=404)
    if request.method == "POST":
        return relay(kind, request.form)
    if "relay" in request.args:
        values = _pop_relay(kind, request.args["relay"])
        if values is None:
            return _refuse("expired", kind)
    else:
        values = _bounded(request.args)
        if values is None:
            return _refuse("unreadable", kind)
    return _finish(kind, handler, values)


def relay(kind: str, given: Mapping[str, str]) -> ResponseReturnValue:
    """Park an answer that arrived without our cookies; send the browser where they come along.

    Microsoft's form_post is a cross-site POST and Salesforce returns outside the
    cookie's path: neither request carries `sl_connect` (nor, for the POST, the
    session). The 303 turns it into a top-level GET on /connect, which does. The
    relay id goes only to this browser, so nobody else can pick the answer up.
    """
    values = _bounded(given)
    if values is None:
        return _refuse("unreadable", kind)
    relay_id = secrets.token_urlsafe(24)
    get_redis().set(
        _key("relay", relay_id), encrypt_json({"kind": kind, "values": values}), ex=RELAY_SECONDS
    )
    response = redirect(url_for("connect.callback", kind=kind, relay=relay_id), code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def _finish(kind: str, handler: FlowKind, values: dict[str, str]) -> ResponseReturnValue:
    redis = get_redis()
    state = values.get("state", "")
    record = _load("flow", state) if state else None
    if record is None or record.get("kind") != kind:
        return _refuse("expired", kind)
    flow = Flow(kind, int(record["team_id"]), int(record["user_id"]), dict(record["data"]))
    bound = _text(redis.get(_key("bound", state)))
    reason = _binding_problem(bound, flow.user_id, flow.team_id)
    if reason is not None:
        _refuse_code(values.get("code"))
        log.warning(
            "connect_callback_refused kind=%s team_id=%s reason=%s", kind, flow.team_id, reason
        )
        return _refuse(reason, kind)
    if _code_was_refused(values.get("code")):
        log.warning("connect_callback_refused kind=%s reason=code_seen_elsewhere", kind)
        return _refuse("code_seen_elsewhere", kind)
    if redis.getdel(_key("flow", state)) is None:
        return _refuse("expired", kind)  # another request got there first
    redis.delete(_key("start", str(record["start_id"])), _key("bound", state))
    try:
        proposal = handler.finish(flow, values)
    except FlowError as exc:
        log.info(
            "connect_not_finished kind=%s team_id=%s status=%s", kind, flow.team_id, exc.status
        )
        return _page(exc.status, "Not connected", exc.message, handler)
    confirm_id = secrets.token_urlsafe(24)
    record = {
        "kind": proposal.kind,
        "team_id": proposal.team_id,
        "user_id": proposal.user_id,
        "verb": proposal.verb,
        "subject": proposal.subject,
        "detail": proposal.detail,
        "data": proposal.data,
        "browser": bound,
    }
    redis.set(_key("confirm", confirm_id), encrypt_json(record), ex=CONFIRM_SECONDS)
    log.info("connect_awaiting_confirmation kind=%s team_id=%s", kind, flow.team_id)
    response = redirect(url_for("connect_confirm.confirm", confirm_id=confirm_id), code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the confirm step -----------------------------------------------------------------


@confirms.get("/<confirm_id>")
@login_required
def confirm(confirm_id: str) -> ResponseReturnValue:
    loaded = _proposal(confirm_id)
    if isinstance(loaded, str):
        return _refuse(loaded, None)
    proposal, handler = loaded
    team = db().get(Team, proposal.team_id)
    page = render_template(
        "connect/confirm.html",
        proposal=proposal,
        team_name=team.name if team is not None else "",
        label=handler.label,
    )
    response = make_response(page)
    response.headers["Cache-Control"] = "no-store"
    return response


@confirms.post("/<confirm_id>")
@login_required
def answer(confirm_id: str) -> ResponseReturnValue:
    action = request.form.get("action")
    if action not in ("connect", "cancel"):
        return _page(400, "Not connected", "Choose Connect or Cancel.", None)
    loaded = _proposal(confirm_id)
    if isinstance(loaded, str):
        return _refuse(loaded, None)
    proposal, handler = loaded
    if get_redis().getdel(_key("confirm", confirm_id)) is None:
        return _refuse("expired", proposal.kind)  # answered a moment ago (a double click)
    team = db().get(Team, proposal.team_id)
    team_name = team.name if team is not None else ""
    if action == "cancel":
        handler.discard(proposal)
        log.info("connect_cancelled kind=%s team_id=%s", proposal.kind, proposal.team_id)
        message = f"{proposal.subject} was not connected to team {team_name}; nothing was saved."
        return _page(200, "Not connected", message, handler)
    try:
        saved = handler.save(proposal)
    except FlowError as exc:
        handler.discard(proposal)
        return _page(exc.status, "Not connected", exc.message, handler)
    log.info("connect_confirmed kind=%s team_id=%s", proposal.kind, proposal.team_id)
    if saved.return_to:
        return redirect(saved.return_to, code=303)
    return _page(200, "Connected", saved.message, handler)


def _proposal(confirm_id: str) -> tuple[Proposal, FlowKind] | str:
    """The proposal, if this browser and person may answer it; else the refusal's reason."""
    record = _load("confirm", confirm_id) if _ID.fullmatch(confirm_id) else None
    if record is None or record.get("kind") not in KINDS:
        return "expired"
    proposal = Proposal(
        kind=str(record["kind"]),
        team_id=int(record["team_id"]),
        user_id=int(record["user_id"]),
        verb=str(record["verb"]),
        subject=str(record["subject"]),
        detail=str(record["detail"]),
        data=dict(record["data"]),
    )
    reason = _binding_problem(record.get("browser"), proposal.user_id, proposal.team_id)
    if reason is not None:
        log.warning("connect_confirm_refused kind=%s reason=%s", proposal.kind, reason)
        return reason
    return proposal, KINDS[proposal.kind]


# -- checks and storage ---------------------------------------------------------------


def _binding_problem(bound: str | None, user_id: int, team_id: int) -> str | None:
    """Why this request may not finish the flow (None: it may): browser first, then person."""
    cookie = request.cookies.get(COOKIE, "")
    if not bound or not cookie or not hmac.compare_digest(bound, _digest(cookie)):
        return "other_browser"
    if current_user() is None:
        return "signed_out"
    if not _is_starter(user_id, team_id):
        return "other_user"
    return None


def _is_starter(user_id: int, team_id: int) -> bool:
    user = current_user()
    return user is not None and user.id == user_id and user.team_id == team_id


def _browser_nonce() -> str:
    """This browser's nonce: the one it carries (two flows at once stay valid), else a new one."""
    given = request.cookies.get(COOKIE, "")
    return given if re.fullmatch(r"[A-Za-z0-9_-]{43}", given) else secrets.token_urlsafe(32)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _refuse_code(code: str | None) -> None:
    if code:
        get_redis().set(_key("refused", _digest(code)), 1, ex=REFUSED_CODE_SECONDS)


def _code_was_refused(code: str | None) -> bool:
    return bool(code) and bool(get_redis().exists(_key("refused", _digest(str(code)))))


def _bounded(given: Mapping[str, str]) -> dict[str, str] | None:
    """The answer's fields as text, or None when there are too many or they are too long."""
    values = {str(k): str(v) for k, v in given.items()}
    too_long = any(len(k) > 100 or len(v) > MAX_FIELD_LENGTH for k, v in values.items())
    return None if len(values) > MAX_FIELDS or too_long else values


def _pop_relay(kind: str, relay_id: str) -> dict[str, str] | None:
    if not _ID.fullmatch(relay_id):
        return None
    raw = get_redis().getdel(_key("relay", relay_id))
    record = _decrypt(raw)
    if record is None or record.get("kind") != kind:
        return None
    return {str(k): str(v) for k, v in dict(record["values"]).items()}


def _load(what: str, id_: str) -> dict[str, Any] | None:
    return _decrypt(get_redis().get(_key(what, id_)))


def _decrypt(raw: Any) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        return decrypt_json(raw.decode() if isinstance(raw, bytes) else str(raw))
    except CredentialsError:
        return None  # written under a key since retired: as good as expired


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _key(what: str, id_: str) -> str:
    return KEY.format(what=what, id=id_)


# -- pages ----------------------------------------------------------------------------


def _refuse(reason: str, kind: str | None, status: int | None = None) -> ResponseReturnValue:
    code, message = REFUSALS[reason]
    return _page(status or code, "Not connected", message, KINDS.get(kind or ""))


def _page(status: int, title: str, message: str, handler: FlowKind | None) -> ResponseReturnValue:
    if handler is not None:
        start_again, start_page = handler.start_again, handler.start_page
    else:
        start_again = "Start connecting again from where you began: the Mailboxes page, or the API."
        start_page = (url_for("mailboxes.page"), "Mailboxes")
    page = render_template(
        "connect/result.html",
        title=title,
        message=message,
        start_again=start_again if status >= 400 else None,
        start_page=start_page,
    )
    return page, status, {"Cache-Control": "no-store"}


def init_app(app: Flask) -> None:
    app.register_blueprint(flows)
    app.register_blueprint(confirms)
