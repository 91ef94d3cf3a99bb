"""One-click unsubscribe (RFC 8058): ``/u/<token>``, answered without sign-in.

The token (`core.tracking.tokens.unsubscribe_token`) names the team and the
address, sealed (encrypted and authenticated); nothing else in the request is
trusted::

    POST  List-Unsubscribe=One-Click   a mail client's one-click ──▶ opted out, 200 text
    GET                                 the confirm page: who, what will happen, a button;
                                        changes nothing (link scanners follow links)
    POST  confirm=<signed by the page>  the button ──▶ opted out, 200 page
    anything else                       400 page; a forged or mangled token: 404 page

Opting out is `worker.sequences.optouts.opt_out`: the address goes on the
team's opt-out list and every live enrolment of it ends `opted_out`. It is
idempotent: a second POST (a client retrying, the person pressing the button
after their client already did) changes nothing and answers the same.

Why the button carries its own signed value and not the session's CSRF token:
the visitor is not signed in and must not be given a cookie; the token in the
URL is already the capability, and the page's value only tells the button's
POST from a stray one. No answer redirects anywhere, so the link cannot be
used to send a visitor to another site.

Must never: change anything on GET, set a cookie, say whether an address we
were not given is on a list, or answer a bad token with an error trace.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from core.models import OptOutSource, Prospect, Team, utcnow
from core.tracking.tokens import (
    UnsubscribeRef,
    is_unsubscribe_confirmation,
    read_unsubscribe_token,
    unsubscribe_confirmation,
)
from web.db import db
from worker.sequences.optouts import opt_out

bp = Blueprint("unsubscribe", __name__)
log = logging.getLogger(__name__)

ONE_CLICK = "One-Click"
SECURITY_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
}


@bp.after_request
def _headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(title: str, message: str, status: int, **extra: object) -> ResponseReturnValue:
    return render_template("unsubscribe.html", title=title, message=message, **extra), status


def _not_valid() -> ResponseReturnValue:
    return _page(
        "Link not valid",
        "This unsubscribe link is not valid: it may have been copied incompletely. Open it "
        "again from the email, or reply to the email and ask to be removed.",
        404,
    )


def _resolve(token: str) -> tuple[UnsubscribeRef, Team] | None:
    ref = read_unsubscribe_token(token)
    if ref is None:
        return None
    team = db().get(Team, ref.team_id)
    return None if team is None else (ref, team)


@bp.get("/u/<token>")
def confirm_page(token: str) -> ResponseReturnValue:
    resolved = _resolve(token)
    if resolved is None:
        return _not_valid()
    ref, team = resolved
    prospect = db().scalar(
        select(Prospect).where(Prospect.team_id == team.id, Prospect.email == ref.email)
    )
    already = prospect is not None and prospect.opted_out_at is not None
    return _page(
        "Unsubscribe",
        "",
        200,
        email=ref.email,
        team=team.name,
        already=already,
        confirm=unsubscribe_confirmation(token),
    )


@bp.post("/u/<token>")
def unsubscribe(token: str) -> ResponseReturnValue:
    resolved = _resolve(token)
    if resolved is None:
        log.info("unsubscribe_refused reason=bad_token")
        return _not_valid()
    ref, team = resolved
    if request.form.get("List-Unsubscribe") == ONE_CLICK:
        source, reason = OptOutSource.ONE_CLICK, "unsubscribed with their mail client (one-click)"
    elif is_unsubscribe_confirmation(token, request.form.get("confirm", "")):
        source, reason = OptOutSource.LINK, "unsubscribed with the link in an email"
    else:
        return _page(
            "Not unsubscribed",
            "Nothing was changed: this request did not come from the unsubscribe button. "
            "Open the link from the email again and press the button.",
            400,
        )
    result = opt_out(
        db(), team_id=team.id, email=ref.email, reason=reason, source=source, now=utcnow()
    )
    db().commit()
    if source == OptOutSource.ONE_CLICK:
        # RFC 8058: the client reads only the status; the words are for a person testing it.
        return Response(
            f"{ref.email} is unsubscribed.\n", 200, content_type="text/plain; charset=utf-8"
        )
    return _page(
        "You are unsubscribed",
        f"{ref.email} will get no more emails from {team.name}'s sequences."
        + ("" if result.added else " (It already was unsubscribed.)"),
        200,
    )
