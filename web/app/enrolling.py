"""Enrolling prospects in a sequence: one by hand, or many from a CSV file.

Owns `/sequences/<id>/enroll` and the CSV import (`/sequences/<id>/import`: the
file checked in full and previewed, rows kept in Redis for 30 minutes; then
`/sequences/<id>/import/<token>`: confirmed rows go in one transaction, refused
whole if anything changed since the preview). Parsing the file is
`web.app.importing`'s; the sequence's page, where the forms are, is
`web.app.sequences`'.

Enrolling goes through `worker.sequences.enrolling` (`enroll`, `enroll_many`:
the one path the API uses too): opted-out and undeliverable addresses and double
enrolments are refused with the reason.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from flask import flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select, update

from core.erasure import ERASED_MESSAGE, erased_addresses, is_erased
from core.header_text import header_text_problem
from core.models import (
    Enrollment,
    Prospect,
    Sequence,
    utcnow,
)
from core.redis import get_redis
from web.api.schemas import check_email
from web.app.common import (
    FormErrors,
    app_blueprint,
    form_str,
)
from web.app.importing import (
    MAX_BYTES,
    BadRow,
    ImportFileError,
    ImportRow,
    ParsedFile,
    parse_csv,
)
from web.app.prospects import upsert_prospect
from web.app.sequences import NAME_LIMIT, sequence_page, team_sequence
from web.auth import login_required
from web.db import db
from worker.sequences import enrolling
from worker.sequences.missing_values import (
    enrolment_warnings,
    needed_values,
    prospect_warning,
    sender_warning,
)
from worker.sequences.send_windows import apply_zones

bp = app_blueprint("enrolling", __name__)

IMPORT_SECONDS = 1800
IMPORT_KEY = "sightline:import:{team}:{sequence}:{token}"


def _enroll_one(sequence: Sequence, row: ImportRow) -> None:
    if is_erased(db(), sequence.team_id, row.email):
        raise enrolling.EnrollmentError(f"{row.email}: {ERASED_MESSAGE}")
    upsert_prospect(db(), sequence.team_id, row.email, row.name, row.company)
    enrolling.enroll(db(), sequence=sequence, email=row.email, name=row.name, now=utcnow())
    apply_zones(db(), sequence.team_id, [(row.email, row.time_zone, row.phone)])


@bp.post("/sequences/<int:sequence_id>/enroll")
@login_required
def enroll(sequence_id: int) -> ResponseReturnValue:
    sequence = team_sequence(sequence_id)
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
        return sequence_page(sequence, enroll_errors=errors, status=422)
    flash(f"Enrolled {email}.", "ok")
    # What will make this enrolment wait, said now rather than found later as a pause.
    prospect = db().scalar(
        select(Prospect).where(Prospect.team_id == sequence.team_id, Prospect.email == email)
    )
    for warning in enrolment_warnings(db(), sequence, prospect):
        flash(f"Warning: {warning}", "warning")
    return redirect(url_for("sequences.detail", sequence_id=sequence.id))


# -- CSV import: preview, then confirm -------------------------------------------------


def apply_do_not_track(team: int, rows: list[ImportRow]) -> None:
    """The file's `do_not_track` column, where it says yes or no, onto the prospects."""
    for value in (True, False):
        emails = [r.email for r in rows if r.do_not_track is value]
        for start in range(0, len(emails), 500):
            db().execute(
                update(Prospect)
                .where(Prospect.team_id == team, Prospect.email.in_(emails[start : start + 500]))
                .values(do_not_track=value)
            )


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
    erased = erased_addresses(db(), sequence.team_id, emails)
    for row in parsed.rows:
        prospect = known.get(row.email)
        if row.email in erased:
            bad.append(BadRow(row.line, f"{row.email}: {ERASED_MESSAGE}"))
        elif row.email in enrolled:
            bad.append(BadRow(row.line, f"{row.email} is already enrolled in this sequence"))
        elif prospect is not None and (refusal := enrolling.why_not_enrollable(prospect)):
            bad.append(BadRow(row.line, refusal))
        else:
            good.append(row)
    bad.sort(key=lambda b: b.line)
    return ImportCheck(good, bad, _missing_value_warnings(sequence, good, known), parsed)


def enroll_checked(sequence: Sequence, check: ImportCheck) -> None:
    """The checked rows enrolled at once, with the file's time zones and do-not-track.

    The page's confirm and the API's import both end here; the caller commits, or
    rolls back on `EnrollmentError` (nothing of the file is then enrolled).
    """
    enrolling.enroll_many(
        db(),
        sequence=sequence,
        people=[(row.email, row.name, row.company) for row in check.rows],
        now=utcnow(),
    )
    apply_zones(db(), sequence.team_id, [(r.email, r.time_zone, r.phone) for r in check.rows])
    apply_do_not_track(sequence.team_id, check.rows)


def _missing_value_warnings(
    sequence: Sequence, rows: list[ImportRow], known: dict[str, Prospect]
) -> list[str]:
    """What the sender lacks, then rows whose data lacks a value a step needs: they will wait."""
    needs = needed_values(sequence.steps)
    warnings = [w for w in (sender_warning(db(), sequence),) if w is not None]
    for row in rows:
        existing = known.get(row.email)
        person = Prospect(
            email=row.email,
            name=row.name or (existing.name if existing else None),
            company=row.company or (existing.company if existing else None),
        )
        found = prospect_warning(needs, person, sequence.team_id, line=row.line)
        if found is not None:
            warnings.append(found)
    return warnings


def _import_key(sequence: Sequence, token: str) -> str:
    return IMPORT_KEY.format(team=sequence.team_id, sequence=sequence.id, token=token)


@bp.post("/sequences/<int:sequence_id>/import")
@login_required
def import_preview(sequence_id: int) -> ResponseReturnValue:
    sequence = team_sequence(sequence_id)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return sequence_page(
            sequence, import_error="CSV file: choose a file to upload.", status=422
        )
    data = upload.stream.read(MAX_BYTES + 1)  # enough to know it is too large
    try:
        parsed = parse_csv(data)
    except ImportFileError as exc:
        return sequence_page(sequence, import_error=f"CSV file: {exc}", status=422)
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
    sequence = team_sequence(sequence_id)
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
        enroll_checked(sequence, check)
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
