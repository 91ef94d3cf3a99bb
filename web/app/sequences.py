"""Sequences: create and edit steps, enrol prospects by hand or from a CSV file.

Owns `/sequences`: the list; a sequence's page (its steps, the enrol forms, its
enrolments by state); step forms (delay, subject, body with a live preview,
same thread, content from the library); the CSV import (preview, then confirm:
see `web.app.importing`).

Editing rules, so that what was sent stays true: steps are added at the end;
only the last step can be removed, and only while nothing was sent for it; the
mailbox can be changed only while nothing was sent (a same-thread step must
come from the mailbox that sent the thread). Editing a step's text changes what
goes out from now on.

Enrolling goes through `worker.sequences.enrolling.enroll` (the one path the API
uses too): opted-out and undeliverable addresses and double enrolments are
refused with the reason.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.header_text import header_text_problem
from core.models import (
    Document,
    DocumentStatus,
    Enrollment,
    EnrollmentState,
    Mailbox,
    MessageDocument,
    Plan,
    Prospect,
    SentMessage,
    Sequence,
    SequenceStep,
    utcnow,
)
from core.redis import get_redis
from core.templates import used_placeholders, values_for
from web.api.schemas import check_email
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
from web.app.importing import (
    MAX_BYTES,
    BadRow,
    ImportFileError,
    ImportRow,
    ParsedFile,
    parse_csv,
)
from web.app.preview import (
    build_preview,
    clean_content,
    find_prospect,
    placeholder_help,
    recent_prospects,
    team_mailboxes,
)
from web.auth import login_required
from web.db import db
from worker.sequences import enrolling

bp = app_blueprint("sequences", __name__)

NAME_LIMIT = 200
MAX_DELAY_DAYS = 365
UNITS = {"minutes": 60, "hours": 3600, "days": 86400}
IMPORT_SECONDS = 1800
IMPORT_KEY = "sightline:import:{team}:{sequence}:{token}"
STATES = tuple(s.value for s in EnrollmentState)


def _sequence(sequence_id: int) -> Sequence:
    return owned(Sequence, sequence_id)


def _sent_count(sequence: Sequence, position: int | None = None) -> int:
    query = (
        select(func.count())
        .select_from(SentMessage)
        .join(Enrollment, Enrollment.id == SentMessage.enrollment_id)
        .where(Enrollment.sequence_id == sequence.id)
    )
    if position is not None:
        query = query.where(SentMessage.step_position == position)
    return int(db().scalar(query) or 0)


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


def _detail(
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
            enroll_errors=enroll_errors or FormErrors(),
            import_error=import_error,
            form=request.form if enroll_errors else None,
        ),
        status,
    )


@bp.get("/sequences/<int:sequence_id>")
@login_required
def detail(sequence_id: int) -> ResponseReturnValue:
    return _detail(_sequence(sequence_id))


# -- creating and renaming -------------------------------------------------------------


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
    }
    locked = sequence is not None and _sent_count(sequence) > 0
    return (
        render_template(
            "app/sequence_form.html",
            sequence=sequence,
            values=values,
            errors=errors,
            mailboxes=mailboxes,
            mailbox_options=[(m.id, m.email) for m in mailboxes],
            mailbox_locked=locked,
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
    if errors or mailbox_id is None:
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
    sequence = _sequence(sequence_id)
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
    if step is None:
        step = SequenceStep(sequence_id=sequence.id, position=position, subject="", body_html="")
        db().add(step)
    step.delay_seconds, step.subject, step.body_html, step.same_thread = (
        delay_seconds,
        subject,
        body,
        same_thread,
    )
    db().flush()
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
    sequence = _sequence(sequence_id)
    if request.method == "POST":
        return _save_step(sequence, None)
    return _step_form(sequence, None, FormErrors())


@bp.route("/sequences/<int:sequence_id>/steps/<int:number>", methods=["GET", "POST"])
@login_required
def edit_step(sequence_id: int, number: int) -> ResponseReturnValue:
    """Step `number` counts from 1, as the pages show it."""
    sequence = _sequence(sequence_id)
    step = _step(sequence, number)
    if request.method == "POST":
        return _save_step(sequence, step)
    return _step_form(sequence, step, FormErrors())


@bp.post("/sequences/<int:sequence_id>/steps/<int:number>/delete")
@login_required
def delete_step(sequence_id: int, number: int) -> ResponseReturnValue:
    sequence = _sequence(sequence_id)
    step = _step(sequence, number)
    if step.position != len(sequence.steps) - 1:
        flash(f"Step {number}: only the last step can be removed.", "error")
    elif _sent_count(sequence, step.position):
        flash(
            f"Step {number} was already sent to someone: it stays, so history stays true.", "error"
        )
    else:
        sequence.steps.remove(step)
        db().commit()
        flash(f"Removed step {number}.", "ok")
    return redirect(url_for("sequences.detail", sequence_id=sequence.id))


# -- enrolling -------------------------------------------------------------------------


def upsert_prospect(
    session: Session, team: int, email: str, name: str | None, company: str | None
) -> Prospect:
    """The team's prospect with that address; blanks filled in, nothing overwritten."""
    found = session.scalar(
        select(Prospect).where(Prospect.team_id == team, Prospect.email == email)
    )
    if found is None:
        prospect = Prospect(team_id=team, email=email, name=name, company=company)
        session.add(prospect)
        session.flush()
        return prospect
    if name and not found.name:
        found.name = name
    if company and not found.company:
        found.company = company
    return found


def _enroll_one(sequence: Sequence, row: ImportRow) -> None:
    upsert_prospect(db(), sequence.team_id, row.email, row.name, row.company)
    enrolling.enroll(db(), sequence=sequence, email=row.email, name=row.name, now=utcnow())


@bp.post("/sequences/<int:sequence_id>/enroll")
@login_required
def enroll(sequence_id: int) -> ResponseReturnValue:
    sequence = _sequence(sequence_id)
    errors = FormErrors()
    raw = form_str("email")
    name = " ".join(form_str("name").split())
    company = " ".join(form_str("company").split())
    email = ""
    try:
        email = check_email(raw).lower()
    except ValueError:
        errors.add(
            "email", f"Email: “{raw}” is not a valid email address." if raw else "Email: required."
        )
    if len(name) > NAME_LIMIT:
        errors.add("name", f"Name: at most {NAME_LIMIT} characters.")
    if len(company) > NAME_LIMIT:
        errors.add("company", f"Company: at most {NAME_LIMIT} characters.")
    for field, label, value in (("name", "Name", name), ("company", "Company", company)):
        if (problem := header_text_problem(value)) is not None:
            errors.add(field, f"{label}: {problem}.")
    if not sequence.steps:
        errors.add("email", "Email: this sequence has no steps yet; add one first.")
    if not errors:
        try:
            _enroll_one(sequence, ImportRow(0, email, name or None, company or None))
            db().commit()
        except enrolling.EnrollmentError as exc:
            db().rollback()
            errors.add("email", f"Email: {exc}.")
    if errors:
        return _detail(sequence, enroll_errors=errors, status=422)
    flash(f"Enrolled {email}.", "ok")
    return redirect(url_for("sequences.detail", sequence_id=sequence.id))


# -- CSV import: preview, then confirm -------------------------------------------------


@dataclass
class ImportCheck:
    rows: list[ImportRow]
    bad: list[BadRow]
    warnings: list[str]
    parsed: ParsedFile


def check_import(sequence: Sequence, parsed: ParsedFile) -> ImportCheck:
    """The file's rows against the team: opted out, undeliverable, already enrolled."""
    emails = [r.email for r in parsed.rows]
    known: dict[str, Prospect] = {}
    for start in range(0, len(emails), 500):
        chunk = emails[start : start + 500]
        for found in db().scalars(
            select(Prospect).where(Prospect.team_id == sequence.team_id, Prospect.email.in_(chunk))
        ):
            known[found.email] = found
    enrolled = set(
        db().scalars(
            select(Prospect.email)
            .join(Enrollment, Enrollment.prospect_id == Prospect.id)
            .where(Enrollment.sequence_id == sequence.id)
        )
    )
    bad = list(parsed.bad)
    good: list[ImportRow] = []
    for row in parsed.rows:
        prospect = known.get(row.email)
        if row.email in enrolled:
            bad.append(BadRow(row.line, f"{row.email} is already enrolled in this sequence"))
        elif prospect is not None and prospect.opted_out_at is not None:
            bad.append(
                BadRow(row.line, f"{row.email} opted out on {prospect.opted_out_at:%Y-%m-%d}")
            )
        elif prospect is not None and prospect.undeliverable_at is not None:
            bad.append(BadRow(row.line, f"{row.email} is undeliverable (a hard bounce)"))
        else:
            good.append(row)
    bad.sort(key=lambda b: b.line)
    return ImportCheck(good, bad, _missing_value_warnings(sequence, good, known), parsed)


def _missing_value_warnings(
    sequence: Sequence, rows: list[ImportRow], known: dict[str, Prospect]
) -> list[str]:
    """Rows whose data lacks a value a step needs: they will wait at that step."""
    needs: list[tuple[int, str]] = []
    for step in sequence.steps:
        for text, is_html in ((step.subject, False), (step.body_html, True)):
            for name, has_fallback in used_placeholders(text, html_mode=is_html):
                if not has_fallback and name not in {n for _, n in needs}:
                    needs.append((step.position, name))
    warnings = []
    for row in rows:
        existing = known.get(row.email)
        person = Prospect(
            email=row.email,
            name=row.name or (existing.name if existing else None),
            company=row.company or (existing.company if existing else None),
        )
        values = values_for(person, sender_email="-", sender_name="-")
        for position, name in needs:
            if not values.get(name):
                warnings.append(
                    f"Line {row.line}: {row.email} has no {name.replace('_', ' ')}; "
                    f"they will wait, paused, at step {position + 1} until it is filled in."
                )
                break
    return warnings


def _import_key(sequence: Sequence, token: str) -> str:
    return IMPORT_KEY.format(team=sequence.team_id, sequence=sequence.id, token=token)


@bp.post("/sequences/<int:sequence_id>/import")
@login_required
def import_preview(sequence_id: int) -> ResponseReturnValue:
    sequence = _sequence(sequence_id)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _detail(sequence, import_error="CSV file: choose a file to upload.", status=422)
    data = upload.stream.read(MAX_BYTES + 1)  # enough to know it is too large
    try:
        parsed = parse_csv(data)
    except ImportFileError as exc:
        return _detail(sequence, import_error=f"CSV file: {exc}", status=422)
    token = secrets.token_urlsafe(16)
    get_redis().set(_import_key(sequence, token), data, ex=IMPORT_SECONDS)
    check = check_import(sequence, parsed)
    return render_template(
        "app/import_preview.html",
        sequence=sequence,
        check=check,
        token=token,
        filename=upload.filename,
    )


@bp.post("/sequences/<int:sequence_id>/import/<token>")
@login_required
def import_confirm(sequence_id: int, token: str) -> ResponseReturnValue:
    sequence = _sequence(sequence_id)
    stored = get_redis().get(_import_key(sequence, token))
    if stored is None:
        flash(
            "That upload expired (30 minutes) or was already imported. Upload the file again.",
            "error",
        )
        return redirect(url_for("sequences.detail", sequence_id=sequence.id))
    data = stored if isinstance(stored, bytes) else str(stored).encode()
    if not sequence.steps:
        flash("This sequence has no steps yet; add one, then import.", "error")
        return redirect(url_for("sequences.detail", sequence_id=sequence.id))
    check = check_import(sequence, parse_csv(data))
    expected = request.form.get("expected", "")
    if expected != str(len(check.rows)):
        # Something changed since the preview: show it again rather than import a surprise.
        flash("Some rows changed since the preview; check them again.", "error")
        return render_template(
            "app/import_preview.html", sequence=sequence, check=check, token=token, filename=""
        )
    try:
        enrolling.enroll_many(
            db(),
            sequence=sequence,
            people=[(row.email, row.name, row.company) for row in check.rows],
            now=utcnow(),
        )
        db().commit()
    except enrolling.EnrollmentError as exc:
        db().rollback()
        flash(f"Nothing was imported: {exc}. Check the rows again.", "error")
        return render_template(
            "app/import_preview.html",
            sequence=sequence,
            check=check_import(sequence, parse_csv(data)),
            token=token,
            filename="",
        )
    get_redis().delete(_import_key(sequence, token))
    left_out = ""
    if check.bad:
        left_out = f"; {len(check.bad)} {'row' if len(check.bad) == 1 else 'rows'} left out"
    flash(f"Enrolled {len(check.rows)} prospects from the file{left_out}.", "ok")
    return redirect(url_for("sequences.detail", sequence_id=sequence.id))
