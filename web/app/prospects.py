"""Prospects: the team's list with search, and one prospect's page.

The page shows who they are (name and company can be fixed here: a step that
needs a missing value waits until they are filled in), their enrolments, the
one-off emails sent to them, everything that happened (the timeline), and the
link to their Contact or Lead in Salesforce once the Salesforce outbox has
resolved them (`salesforce_outbox.who_id`, on the team's org's instance URL).

`upsert_prospect` is how compose and enrolling name a prospect: found by address,
blanks filled in, nothing overwritten; an erased person is refused (`core.erasure`).

Privacy on the page: "do not track" (no pixel, no rewritten links, hits on older
mail dropped) and erasing the person (`worker.erasure`), confirmed by typing their
address; the answer says what stays in Salesforce.
"""

from __future__ import annotations

from datetime import datetime

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from config import get_settings
from core.erasure import refuse_erased
from core.header_text import header_text_problem
from core.models import (
    Enrollment,
    Event,
    Prospect,
    SalesforceConnection,
    SalesforceOutbox,
    Sequence,
    utcnow,
)
from core.zones.inference import from_domain
from core.zones.names import ZoneError
from web.app.common import (
    FormErrors,
    app_blueprint,
    form_str,
    keyset_page,
    owned,
    team_id,
    user,
)
from web.app.timeline import history
from web.auth import login_required
from web.db import db
from worker.erasure import erase_person
from worker.sequences.send_windows import learn_zone, set_zone

bp = app_blueprint("prospects", __name__)

NAME_LIMIT = 200
SEARCH_LIMIT = 200


def upsert_prospect(
    session: Session, team: int, email: str, name: str | None, company: str | None
) -> Prospect:
    """The team's prospect with that address; blanks filled in, nothing overwritten.

    Raises:
        ErasedError: the team erased the person at that address.
    """
    refuse_erased(session, team, email)
    found = session.scalar(
        select(Prospect).where(Prospect.team_id == team, Prospect.email == email)
    )
    if found is None:
        prospect = Prospect(team_id=team, email=email, name=name, company=company)
        learn_zone(prospect, from_domain(email))
        session.add(prospect)
        session.flush()
        return prospect
    if name and not found.name:
        found.name = name
    if company and not found.company:
        found.company = company
    return found


def salesforce_link(prospect: Prospect) -> tuple[str, str] | None:
    """(URL, record id) of the prospect's Contact or Lead, once Salesforce resolved it."""
    who_id = db().scalar(
        select(SalesforceOutbox.who_id)
        .where(
            SalesforceOutbox.team_id == prospect.team_id,
            SalesforceOutbox.who_email == prospect.email,
            SalesforceOutbox.who_id.is_not(None),
        )
        .order_by(SalesforceOutbox.id.desc())
        .limit(1)
    )
    if not who_id:
        return None
    instance = db().scalar(
        select(SalesforceConnection.instance_url).where(
            SalesforceConnection.team_id == prospect.team_id
        )
    )
    instance = instance or get_settings().salesforce.instance_url
    if not instance:
        return None
    return f"{instance.rstrip('/')}/{who_id}", str(who_id)


def search_filter(q: str) -> ColumnElement[bool]:
    needle = q.lower()
    return or_(
        func.lower(Prospect.email).contains(needle, autoescape=True),
        func.lower(func.coalesce(Prospect.name, "")).contains(needle, autoescape=True),
        func.lower(func.coalesce(Prospect.company, "")).contains(needle, autoescape=True),
    )


@bp.get("/prospects")
@login_required
def index() -> ResponseReturnValue:
    q = (request.args.get("q") or "").strip()[:SEARCH_LIMIT]
    query = select(Prospect).where(Prospect.team_id == team_id())
    if q:
        query = query.where(search_filter(q))
    page = keyset_page(query, Prospect.id)
    ids = [p.id for p in page.items]
    counts: dict[int, int] = dict(
        db()
        .execute(
            select(Enrollment.prospect_id, func.count())
            .where(Enrollment.prospect_id.in_(ids))
            .group_by(Enrollment.prospect_id)
        )
        .all()
    )
    return render_template("app/prospects.html", page=page, q=q, counts=counts)


def _parse_before() -> datetime | None:
    raw = request.args.get("before_time") or ""
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def _page(
    prospect: Prospect, errors: FormErrors | None = None, status: int = 200
) -> ResponseReturnValue:
    enrollments = keyset_page(
        select(Enrollment, Sequence.name)
        .join(Sequence, Sequence.id == Enrollment.sequence_id)
        .where(Enrollment.prospect_id == prospect.id, Enrollment.team_id == prospect.team_id),
        Enrollment.id,
        scalars=False,
        key=lambda row: int(row[0].id),
    )
    enrollment_ids = list(
        db().scalars(select(Enrollment.id).where(Enrollment.prospect_id == prospect.id))
    )
    timeline = history(
        event_filter=(Event.prospect_id == prospect.id) & (Event.team_id == prospect.team_id),
        enrollment_ids=enrollment_ids,
        before=_parse_before(),
    )
    return (
        render_template(
            "app/prospect.html",
            prospect=prospect,
            enrollments=enrollments,
            timeline=timeline,
            salesforce=salesforce_link(prospect),
            errors=errors or FormErrors(),
            form=request.form if errors else None,
        ),
        status,
    )


@bp.get("/prospects/<int:prospect_id>")
@login_required
def detail(prospect_id: int) -> ResponseReturnValue:
    return _page(owned(Prospect, prospect_id))


@bp.post("/prospects/<int:prospect_id>")
@login_required
def update(prospect_id: int) -> ResponseReturnValue:
    prospect = owned(Prospect, prospect_id)
    errors = FormErrors()
    name = " ".join(form_str("name").split())
    company = " ".join(form_str("company").split())
    if len(name) > NAME_LIMIT:
        errors.add("name", f"Name: at most {NAME_LIMIT} characters ({len(name)} given).")
    if len(company) > NAME_LIMIT:
        errors.add("company", f"Company: at most {NAME_LIMIT} characters ({len(company)} given).")
    # Line breaks were folded into spaces above; what is left would reach subjects raw.
    for field, label, value in (("name", "Name", name), ("company", "Company", company)):
        if (problem := header_text_problem(value)) is not None:
            errors.add(field, f"{label}: {problem}.")
    if errors:
        return _page(prospect, errors, 422)
    prospect.name = name or None
    prospect.company = company or None
    db().commit()
    flash(f"Saved {prospect.email}.", "ok")
    return redirect(url_for("prospects.detail", prospect_id=prospect.id))


@bp.post("/prospects/<int:prospect_id>/tracking")
@login_required
def tracking(prospect_id: int) -> ResponseReturnValue:
    prospect = owned(Prospect, prospect_id)
    prospect.do_not_track = request.form.get("do_not_track") == "1"
    db().commit()
    flash(
        "Not tracked from now on: no pixel, no rewritten links, hits on older mail dropped."
        if prospect.do_not_track
        else "Tracked again from their next email.",
        "ok",
    )
    return redirect(url_for("prospects.detail", prospect_id=prospect.id))


@bp.post("/prospects/<int:prospect_id>/erase")
@login_required
def erase(prospect_id: int) -> ResponseReturnValue:
    prospect = owned(Prospect, prospect_id)
    if form_str("confirm").strip().lower() != prospect.email:
        errors = FormErrors()
        errors.add("confirm", "Erase: type their email address exactly to confirm.")
        return _page(prospect, errors, 422)
    report = erase_person(
        db(), team_id=prospect.team_id, email=prospect.email, user_id=user().id,
        now=utcnow(),
    )  # fmt: skip
    db().commit()
    flash(f"Erased: nothing about this person is kept but a keyed hash. {report.salesforce_note()}",
          "ok")  # fmt: skip
    return redirect(url_for("prospects.index"))


@bp.post("/prospects/<int:prospect_id>/time-zone")
@login_required
def time_zone(prospect_id: int) -> ResponseReturnValue:
    """Set the prospect's zone by hand; empty forgets it (guessed again, else the sequence's)."""
    prospect = owned(Prospect, prospect_id)
    try:
        set_zone(prospect, form_str("time_zone"))
    except ZoneError as exc:
        db().rollback()
        errors = FormErrors()
        errors.add("time_zone", f"Time zone: {exc}.")
        return _page(prospect, errors, 422)
    db().commit()
    flash(f"Time zone of {prospect.email}: {prospect.time_zone or 'the sequence default'}.", "ok")
    return redirect(url_for("prospects.detail", prospect_id=prospect.id))
