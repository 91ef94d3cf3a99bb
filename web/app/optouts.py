"""The opt-out list page: who may not be emailed, since when and why; add and remove.

The list is the team's prospects with `opted_out_at` set, newest first (keyset
pages, like every list); each row says who put it there (a person of the team,
or the recipient: the unsubscribe link, a reply, a complaint) and the reason.
Adding and removing go through `worker.sequences.optouts`, as the API and the
unsubscribe endpoint do, and are recorded with who and when (the history
under the list). Anyone in the team may add an address (it only ever stops
mail); taking one off lets the team email them again, so it is admins' (`web.roles`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import OptOutChange, OptOutSource, Prospect, User, utcnow
from web.api.schemas import check_email
from web.app.common import FormErrors, app_blueprint, form_str, keyset_page, owned, team_id, user
from web.auth import login_required
from web.db import db
from web.roles import admin_required
from worker.sequences import optouts

bp = app_blueprint("optouts", __name__)

HISTORY_SHOWN = 20
BY_RECIPIENT = {
    OptOutSource.LINK: "the recipient (unsubscribe link)",
    OptOutSource.ONE_CLICK: "the recipient (one-click unsubscribe)",
    OptOutSource.REPLY: "the recipient (asked by email)",
    OptOutSource.COMPLAINT: "the recipient (spam complaint)",
}


@dataclass(frozen=True)
class ChangeView:
    """One change to the list as the page and the API show it."""

    id: int
    prospect_id: int
    email: str
    action: str
    source: str
    reason: str | None
    by: str
    at: datetime


def who(source: str, user_name: str | None, user_email: str | None) -> str:
    """Who made a change, in words: a teammate's name, or which way the recipient asked."""
    if source in BY_RECIPIENT:
        return BY_RECIPIENT[OptOutSource(source)]
    return user_name or user_email or "a former user"


def changes(
    session: Session,
    team: int,
    *,
    limit: int,
    change_ids: list[int] | None = None,
    before: int | None = None,
) -> list[ChangeView]:
    """The team's latest changes to the list, newest first (optionally only `change_ids`,
    or those before an id)."""
    query = (
        select(OptOutChange, Prospect.email, User.name, User.email)
        .join(Prospect, Prospect.id == OptOutChange.prospect_id)
        .outerjoin(User, User.id == OptOutChange.user_id)
        .where(OptOutChange.team_id == team)
        .order_by(OptOutChange.id.desc())
        .limit(limit)
    )
    if change_ids is not None:
        query = query.where(OptOutChange.id.in_(change_ids))
    if before is not None:
        query = query.where(OptOutChange.id < before)
    return [
        ChangeView(
            id=change.id,
            prospect_id=change.prospect_id,
            email=email,
            action=change.action,
            source=change.source,
            reason=change.reason,
            by=who(change.source, user_name, user_email),
            at=change.at,
        )
        for change, email, user_name, user_email in session.execute(query)
    ]


def added_by(session: Session, team: int, prospect_ids: list[int]) -> dict[int, ChangeView]:
    """Each listed prospect's latest "added" change (an address opted out before this
    history was kept has none)."""
    if not prospect_ids:
        return {}
    latest = list(
        session.scalars(
            select(func.max(OptOutChange.id))
            .where(
                OptOutChange.team_id == team,
                OptOutChange.prospect_id.in_(prospect_ids),
                OptOutChange.action == "added",
            )
            .group_by(OptOutChange.prospect_id)
        )
    )
    views = changes(session, team, change_ids=latest, limit=len(latest) or 1)
    return {view.prospect_id: view for view in views}


def _page(errors: FormErrors, values: dict[str, str], status: int = 200) -> ResponseReturnValue:
    page = keyset_page(
        select(Prospect).where(Prospect.team_id == team_id(), Prospect.opted_out_at.is_not(None)),
        Prospect.id,
    )
    listed = [p.id for p in page.items]
    return (
        render_template(
            "app/optouts.html",
            page=page,
            added=added_by(db(), team_id(), listed),
            history=changes(db(), team_id(), limit=HISTORY_SHOWN),
            errors=errors,
            values=values,
        ),
        status,
    )


@bp.get("/opt-outs")
@login_required
def index() -> ResponseReturnValue:
    return _page(FormErrors(), {"email": "", "reason": ""})


@bp.post("/opt-outs")
@login_required
def add() -> ResponseReturnValue:
    values = {"email": form_str("email", limit=400), "reason": form_str("reason", limit=1000)}
    errors = FormErrors()
    email = ""
    try:
        email = check_email(values["email"]).lower()
    except ValueError:
        errors.add("email", "Email address: enter an address like name@example.com.")
    if not values["reason"]:
        errors.add("reason", "Reason: say why this address may not be emailed.")
    elif len(values["reason"]) > optouts.REASON_LIMIT:
        errors.add("reason", f"Reason: at most {optouts.REASON_LIMIT} characters.")
    if errors:
        return _page(errors, values, 422)
    result = optouts.opt_out(
        db(),
        team_id=team_id(),
        email=email,
        reason=values["reason"],
        source=OptOutSource.PAGE,
        now=utcnow(),
        user_id=user().id,
    )
    db().commit()
    if result.added:
        stopped = f"; {result.stopped} live enrolment(s) ended" if result.stopped else ""
        flash(f"{email} is on the opt-out list{stopped}.", "success")
    else:
        flash(f"{email} was already on the opt-out list; its reason is unchanged.", "info")
    return redirect(url_for("optouts.index"))


@bp.post("/opt-outs/<int:prospect_id>/remove")
@login_required
@admin_required
def remove(prospect_id: int) -> ResponseReturnValue:
    prospect = owned(Prospect, prospect_id)
    removed = optouts.remove(
        db(),
        team_id=team_id(),
        prospect_id=prospect.id,
        source=OptOutSource.PAGE,
        now=utcnow(),
        user_id=user().id,
    )
    db().commit()
    if removed:
        flash(
            f"{prospect.email} is off the opt-out list: it can be enrolled again. Sequences "
            "it was taken out of stay ended.",
            "success",
        )
    else:
        flash(f"{prospect.email} was not on the opt-out list.", "info")
    return redirect(url_for("optouts.index"))
