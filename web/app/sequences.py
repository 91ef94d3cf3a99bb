"""Sequences: the list, a sequence's page, its settings and its steps.

Owns `/sequences`: the list; a sequence's page (its steps, the enrol forms, its
enrolments by state); step forms (delay, subject, body with a live preview,
same thread, content from the library). Enrolling, by hand or from a CSV file,
is `web.app.enrolling`'s (its forms are on this page).

Editing rules, so that what was sent stays true: steps are added at the end;
only the last step can be removed, and only while nothing was sent for it; the
mailbox can be changed only while nothing was sent (a same-thread step must
come from the mailbox that sent the thread). Editing a step's text changes what
goes out from now on.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.models import (
    Document,
    DocumentStatus,
    Enrollment,
    EnrollmentState,
    Mailbox,
    MessageDocument,
    Plan,
    Prospect,
    Sequence,
    SequenceStep,
    utcnow,
)
from web.app.common import (
    FormErrors,
    app_blueprint,
    form_str,
    keyset_page,
    owned,
    team,
    team_id,
)
from web.app.email_templates import team_templates
from web.app.preview import (
    build_preview,
    clean_content,
    find_prospect,
    placeholder_help,
    recent_prospects,
    team_mailboxes,
)
from web.app.send_window_form import apply_window, read_window, window_text, window_values
from web.auth import login_required
from web.db import db
from worker.sequences.editing import remove_last_step, save_step, sent_count

bp = app_blueprint("sequences", __name__)

NAME_LIMIT = 200
MAX_DELAY_DAYS = 365
UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
STATES = tuple(s.value for s in EnrollmentState)


def team_sequence(sequence_id: int) -> Sequence:
    """The signed-in team's sequence, or 404."""
    return owned(Sequence, sequence_id)


def _sent_count(sequence: Sequence, position: int | None = None) -> int:
    return sent_count(db(), sequence, position)


def describe_delay(seconds: int, first: bool) -> str:
    after = "after enrolling" if first else "after the previous step"
    if seconds == 0:
        return "at once" if first else "right after the previous step"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} {after}"
    return f"{seconds} seconds {after}"


def split_delay(seconds: int) -> tuple[int, str]:
    for unit in ("days", "hours", "minutes"):
        if seconds % UNITS[unit] == 0 and seconds:
            return seconds // UNITS[unit], unit
    return seconds // 60, "minutes"


# -- the list and the sequence's page --------------------------------------------------


@bp.get("/sequences")
@login_required
def index() -> ResponseReturnValue:
    page = keyset_page(select(Sequence).where(Sequence.team_id == team_id()), Sequence.id)
    ids = [s.id for s in page.items]
    counts: dict[int, dict[str, int]] = {i: {} for i in ids}
    for sequence_id, state, count in db().execute(
        select(Enrollment.sequence_id, Enrollment.state, func.count())
        .where(Enrollment.sequence_id.in_(ids))
        .group_by(Enrollment.sequence_id, Enrollment.state)
    ):
        counts[int(sequence_id)][str(state)] = int(count)
    return render_template("app/sequences.html", page=page, counts=counts)


def sequence_page(
    sequence: Sequence,
    *,
    enroll_errors: FormErrors | None = None,
    import_error: str | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    state = request.args.get("state") or ""
    if state and state not in STATES:
        abort(400, description=f"state: one of {', '.join(STATES)}")
    query = (
        select(Enrollment, Prospect)
        .join(Prospect, Prospect.id == Enrollment.prospect_id)
        .where(Enrollment.sequence_id == sequence.id, Enrollment.team_id == sequence.team_id)
    )
    if state:
        query = query.where(Enrollment.state == state)
    enrollments = keyset_page(query, Enrollment.id, scalars=False, key=lambda r: int(r[0].id))
    state_counts: dict[str, int] = dict(
        db()
        .execute(
            select(Enrollment.state, func.count())
            .where(Enrollment.sequence_id == sequence.id)
            .group_by(Enrollment.state)
        )
        .all()
    )
    mailbox = db().get(Mailbox, sequence.mailbox_id)
    return (
        render_template(
            "app/sequence.html",
            sequence=sequence,
            mailbox=mailbox,
            enrollments=enrollments,
            state=state,
            states=STATES,
            state_counts=state_counts,
            describe_delay=describe_delay,
            window_text=window_text(sequence),
            enroll_errors=enroll_errors or FormErrors(),
            import_error=import_error,
            form=request.form if enroll_errors else None,
        ),
        status,
    )


@bp.get("/sequences/<int:sequence_id>")
@login_required
def detail(sequence_id: int) -> ResponseReturnValue:
    return sequence_page(team_sequence(sequence_id))


# -- creating and renaming -------------------------------------------------------------


# A sequence's own tracking choice as the form's value: NULL follows the team's default.
TRACKING_CHOICE: dict[bool | None, str] = {None: "", True: "on", False: "off"}


def _settings_form(
    sequence: Sequence | None, errors: FormErrors, status: int = 200
) -> ResponseReturnValue:
    mailboxes = team_mailboxes()
    values = {
        "name": form_str("name")
        if request.method == "POST"
        else (sequence.name if sequence else ""),
        "mailbox_id": (
            form_str("mailbox_id")
            if request.method == "POST"
            else str(sequence.mailbox_id if sequence else (mailboxes[0].id if mailboxes else ""))
        ),
        "stop_at_company": request.form.get("stop_at_company") == "1"
        if request.method == "POST"
        else bool(sequence and sequence.stop_at_company),
        "tracking": form_str("tracking")
        if request.method == "POST"
        else TRACKING_CHOICE.get(sequence.tracking if sequence else None, ""),
    }
    team_default = "on" if team().tracking_enabled else "off"
    locked = sequence is not None and _sent_count(sequence) > 0
    return (
        render_template(
            "app/sequence_form.html",
            sequence=sequence,
            values=values,
            window=window_values(sequence),
            errors=errors,
            mailboxes=mailboxes,
            mailbox_options=[(m.id, m.email) for m in mailboxes],
            mailbox_locked=locked,
            tracking_options=[
                ("", f"As the team's default (now {team_default})"),
                ("on", "On for this sequence"),
                ("off", "Off for this sequence"),
            ],
        ),
        status,
    )


def _save_settings(sequence: Sequence | None) -> ResponseReturnValue:
    errors = FormErrors()
    name = " ".join(form_str("name").split())
    if not name:
        errors.add("name", "Name: give the sequence a name.")
    elif len(name) > NAME_LIMIT:
        errors.add("name", f"Name: at most {NAME_LIMIT} characters ({len(name)} given).")
    locked = sequence is not None and _sent_count(sequence) > 0
    mailbox_id = sequence.mailbox_id if sequence is not None else None
    if not locked:
        chosen = next((m for m in team_mailboxes() if str(m.id) == form_str("mailbox_id")), None)
        if chosen is None:
            errors.add("mailbox_id", "Send from: choose one of your team's connected mailboxes.")
        else:
            mailbox_id = chosen.id
    timing = read_window(errors, sequence)
    tracking = form_str("tracking")
    if tracking not in ("", "on", "off"):
        errors.add("tracking", "Track opens and clicks: choose one of the options.")
    if errors or mailbox_id is None or timing is None:
        return _settings_form(sequence, errors, 422)
    if sequence is None:
        sequence = Sequence(
            team_id=team_id(), mailbox_id=mailbox_id, name=name, created_at=utcnow()
        )
        db().add(sequence)
        message = f"Created “{name}”. Add its first step."
    else:
        sequence.name, sequence.mailbox_id = name, mailbox_id
        message = f"Saved “{name}”."
    apply_window(sequence, *timing)
    sequence.stop_at_company = request.form.get("stop_at_company") == "1"
    sequence.tracking = {"on": True, "off": False}.get(tracking)
    db().commit()
    flash(message, "ok")
    if not sequence.steps:
        return redirect(url_for("sequences.new_step", sequence_id=sequence.id))
    return redirect(url_for("sequences.detail", sequence_id=sequence.id))


@bp.route("/sequences/new", methods=["GET", "POST"])
@login_required
def new() -> ResponseReturnValue:
    if request.method == "POST":
        return _save_settings(None)
    return _settings_form(None, FormErrors())


@bp.route("/sequences/<int:sequence_id>/settings", methods=["GET", "POST"])
@login_required
def settings(sequence_id: int) -> ResponseReturnValue:
    sequence = team_sequence(sequence_id)
    if request.method == "POST":
        return _save_settings(sequence)
    return _settings_form(sequence, FormErrors())


# -- steps -----------------------------------------------------------------------------


def _library(sequence: Sequence) -> list[Document]:
    """Ready documents a step can carry as tracked links (team plans only)."""
    if team().plan != Plan.TEAM:
        return []
    return list(
        db().scalars(
            select(Document)
            .where(
                Document.team_id == sequence.team_id,
                Document.status == DocumentStatus.READY,
                Document.deleted_at.is_(None),
            )
            .order_by(Document.name)
            .limit(200)
        )
    )


def _step_documents(step: SequenceStep | None) -> list[int]:
    if step is None:
        return []
    return [
        int(i)
        for i in db().scalars(
            select(MessageDocument.document_id)
            .where(MessageDocument.step_id == step.id)
            .order_by(MessageDocument.position)
        )
    ]


def _step_form(
    sequence: Sequence, step: SequenceStep | None, errors: FormErrors, status: int = 200
) -> ResponseReturnValue:
    position = step.position if step is not None else len(sequence.steps)
    first = position == 0
    if request.method == "POST":
        values = {
            "delay": form_str("delay"),
            "unit": form_str("unit"),
            "subject": form_str("subject"),
            "body_html": request.form.get("body_html", ""),
            "same_thread": bool(request.form.get("same_thread")),
            "documents": request.form.getlist("documents"),
        }
    else:
        template = None
        if request.args.get("template"):
            template = next(
                (t for t in team_templates() if str(t.id) == request.args["template"]), None
            )
        delay, unit = (
            split_delay(step.delay_seconds) if step else ((0, "days") if first else (3, "days"))
        )
        values = {
            "delay": str(delay),
            "unit": unit,
            "subject": template.subject if template else (step.subject if step else ""),
            "body_html": template.body_html if template else (step.body_html if step else ""),
            "same_thread": step.same_thread if step else not first,
            "documents": [str(i) for i in _step_documents(step)],
        }
        if template is not None and step is None and not first:
            values["same_thread"] = False
    prospects = recent_prospects()
    prospect = find_prospect(request.values.get("preview_prospect")) or (
        prospects[0] if prospects else None
    )
    mailbox = db().get(Mailbox, sequence.mailbox_id)
    preview = build_preview(str(values["subject"]), str(values["body_html"]), prospect, mailbox)
    return (
        render_template(
            "app/step_form.html",
            sequence=sequence,
            step=step,
            position=position,
            first=first,
            values=values,
            errors=errors,
            preview=preview,
            prospects=prospects,
            chosen=request.values.get("preview_prospect") or (prospect.email if prospect else ""),
            placeholders=placeholder_help(),
            templates=team_templates(),
            library=_library(sequence),
            units=list(UNITS),
            mailbox=mailbox,
        ),
        status,
    )


def _save_step(sequence: Sequence, step: SequenceStep | None) -> ResponseReturnValue:
    errors = FormErrors()
    position = step.position if step is not None else len(sequence.steps)
    first = position == 0
    delay_seconds = 0
    unit = form_str("unit")
    try:
        amount = int(form_str("delay") or "0")
        if unit not in UNITS:
            raise ValueError
        delay_seconds = amount * UNITS[unit]
        if amount < 0:
            errors.add("delay", "Wait: cannot be negative.")
        elif delay_seconds > MAX_DELAY_DAYS * 86400:
            errors.add("delay", f"Wait: at most {MAX_DELAY_DAYS} days.")
    except ValueError:
        errors.add("delay", "Wait: a whole number of minutes, hours or days.")
    same_thread = bool(request.form.get("same_thread")) and not first
    subject = form_str("subject")
    body = clean_content(
        errors, subject, request.form.get("body_html", ""), subject_required=not same_thread
    )
    library = {str(d.id): d for d in _library(sequence)}
    chosen_documents = request.form.getlist("documents")
    unknown = [d for d in chosen_documents if d not in library]
    if unknown:
        errors.add("documents", "Content: choose documents from your library that are ready.")
    if request.form.get("action") == "preview" or errors:
        return _step_form(sequence, step, errors, 422 if errors else 200)
    step = save_step(
        db(),
        sequence,
        step,
        delay_seconds=delay_seconds,
        subject=subject,
        body_html=body,
        same_thread=same_thread,
    )
    _replace_documents(db(), step, [int(d) for d in chosen_documents])
    db().commit()
    flash(f"Saved step {position + 1}.", "ok")
    return redirect(url_for("sequences.detail", sequence_id=sequence.id))


def _replace_documents(session: Session, step: SequenceStep, document_ids: Iterable[int]) -> None:
    session.execute(delete(MessageDocument).where(MessageDocument.step_id == step.id))
    for position, document_id in enumerate(dict.fromkeys(document_ids)):
        session.add(
            MessageDocument(
                team_id=team_id(),
                document_id=document_id,
                step_id=step.id,
                tracked=True,
                position=position,
            )
        )


def _step(sequence: Sequence, position: int) -> SequenceStep:
    step = next((s for s in sequence.steps if s.position == position - 1), None)
    if step is None:
        abort(404)
    return step


@bp.route("/sequences/<int:sequence_id>/steps/new", methods=["GET", "POST"])
@login_required
def new_step(sequence_id: int) -> ResponseReturnValue:
    sequence = team_sequence(sequence_id)
    if request.method == "POST":
        return _save_step(sequence, None)
    return _step_form(sequence, None, FormErrors())


@bp.route("/sequences/<int:sequence_id>/steps/<int:number>", methods=["GET", "POST"])
@login_required
def edit_step(sequence_id: int, number: int) -> ResponseReturnValue:
    """Step `number` counts from 1, as the pages show it."""
    sequence = team_sequence(sequence_id)
    step = _step(sequence, number)
    if request.method == "POST":
        return _save_step(sequence, step)
    return _step_form(sequence, step, FormErrors())


@bp.post("/sequences/<int:sequence_id>/steps/<int:number>/delete")
@login_required
def delete_step(sequence_id: int, number: int) -> ResponseReturnValue:
    sequence = team_sequence(sequence_id)
    step = _step(sequence, number)
    refused = remove_last_step(db(), sequence, step)
    if refused:
        flash(refused, "error")
    else:
        db().commit()
        flash(f"Removed step {number}.", "ok")
    return redirect(url_for("sequences.detail", sequence_id=sequence.id))
