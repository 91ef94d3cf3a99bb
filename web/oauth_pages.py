"""The OAuth flow's pages: the start link, the provider's answer, the confirm step.

The flow and its guarantees are described in `web.oauth_flow` (the flow record,
the provider kinds, storage); this module serves its three steps and holds the
checks that bind them to the browser and person who started the flow:

- `GET /connect/start/<id>`: bind this browser (first one wins), go to the provider.
- `GET|POST /connect/<kind>/callback`: the provider's answer (a POST, or an answer
  that came back outside the cookie's path, is relayed to a GET first); the same
  browser and person only; code → proposal, nothing saved.
- `GET|POST /connect/confirm/<id>`: "Connect … to team …?"; Connect saves, Cancel
  gives the grant back.

Must never: save a grant before the confirm POST, put a token in a page or a
URL, log a token, a code or a nonce, or redirect anywhere but a path on this site.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Mapping

from flask import Blueprint, Flask, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from config import get_settings
from core.crypto import encrypt_json
from core.models import Team
from core.redis import get_redis
from web.auth import current_user, login_required, protect
from web.db import db
from web.oauth_flow import (
    CONFIRM_SECONDS,
    COOKIE,
    COOKIE_PATH,
    FLOW_SECONDS,
    ID_PATTERN,
    KINDS,
    MAX_FIELD_LENGTH,
    MAX_FIELDS,
    REFUSED_CODE_SECONDS,
    RELAY_SECONDS,
    Flow,
    FlowError,
    FlowKind,
    Proposal,
    as_text,
    decrypt_record,
    load_record,
    redis_key,
)
from web.redirects import safe_redirect_path

log = logging.getLogger(__name__)

flows = Blueprint("connect", __name__, url_prefix="/connect")
confirms = Blueprint("connect_confirm", __name__, url_prefix="/connect/confirm")
protect(confirms)

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


@flows.get("/start/<start_id>")
@login_required
def start(start_id: str) -> ResponseReturnValue:
    """Bind this browser to the flow (first browser wins), then go on to the provider."""
    redis = get_redis()
    known = ID_PATTERN.fullmatch(start_id)
    state = as_text(redis.get(redis_key("start", start_id))) if known else None
    record = load_record("flow", state) if state else None
    if state is None or record is None:
        return _refuse("expired", None)
    kind = str(record["kind"])
    if not _is_starter(int(record["user_id"]), int(record["team_id"])):
        log.warning("connect_start_refused kind=%s reason=other_user", kind)
        return _refuse("other_user", kind)
    nonce = _browser_nonce()
    digest = _digest(nonce)
    left = int(redis.ttl(redis_key("flow", state)))
    bound = left > 0 and redis.set(redis_key("bound", state), digest, ex=left, nx=True)
    if not bound:
        already = as_text(redis.get(redis_key("bound", state)))
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
        redis_key("relay", relay_id),
        encrypt_json({"kind": kind, "values": values}),
        ex=RELAY_SECONDS,
    )
    response = redirect(url_for("connect.callback", kind=kind, relay=relay_id), code=303)
    response.headers["Cache-Control"] = "no-store"
    return response


def _finish(kind: str, handler: FlowKind, values: dict[str, str]) -> ResponseReturnValue:
    redis = get_redis()
    state = values.get("state", "")
    record = load_record("flow", state) if state else None
    if record is None or record.get("kind") != kind:
        return _refuse("expired", kind)
    flow = Flow(kind, int(record["team_id"]), int(record["user_id"]), dict(record["data"]))
    bound = as_text(redis.get(redis_key("bound", state)))
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
    if redis.getdel(redis_key("flow", state)) is None:
        return _refuse("expired", kind)  # another request got there first
    redis.delete(redis_key("start", str(record["start_id"])), redis_key("bound", state))
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
    redis.set(redis_key("confirm", confirm_id), encrypt_json(record), ex=CONFIRM_SECONDS)
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
    if get_redis().getdel(redis_key("confirm", confirm_id)) is None:
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
        # Whatever a kind hands back, a browser is only ever sent to a path on this site.
        return redirect(safe_redirect_path(saved.return_to), code=303)
    return _page(200, "Connected", saved.message, handler)


def _proposal(confirm_id: str) -> tuple[Proposal, FlowKind] | str:
    """The proposal, if this browser and person may answer it; else the refusal's reason."""
    record = load_record("confirm", confirm_id) if ID_PATTERN.fullmatch(confirm_id) else None
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
        get_redis().set(redis_key("refused", _digest(code)), 1, ex=REFUSED_CODE_SECONDS)


def _code_was_refused(code: str | None) -> bool:
    return bool(code) and bool(get_redis().exists(redis_key("refused", _digest(str(code)))))


def _bounded(given: Mapping[str, str]) -> dict[str, str] | None:
    """The answer's fields as text, or None when there are too many or they are too long."""
    values = {str(k): str(v) for k, v in given.items()}
    too_long = any(len(k) > 100 or len(v) > MAX_FIELD_LENGTH for k, v in values.items())
    return None if len(values) > MAX_FIELDS or too_long else values


def _pop_relay(kind: str, relay_id: str) -> dict[str, str] | None:
    if not ID_PATTERN.fullmatch(relay_id):
        return None
    raw = get_redis().getdel(redis_key("relay", relay_id))
    record = decrypt_record(raw)
    if record is None or record.get("kind") != kind:
        return None
    return {str(k): str(v) for k, v in dict(record["values"]).items()}


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
