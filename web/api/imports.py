"""`POST /api/v1/sequences/{id}/import`: many prospects enrolled from a CSV file.

The page's import in one call: the same parser (`web.app.importing.parse_csv`),
the same checks against the team (opted out, erased, undeliverable, already
enrolled: `web.app.enrolling.check_import`) and the same enrolment
(`enroll_checked`, one transaction). The page shows a preview and asks to
confirm; here `dry_run=true` is that preview, and a call without it enrols the
rows that pass and reports the rest by line, so a script never has to guess
what happened to a row.
"""

from __future__ import annotations

from flask import jsonify, request
from flask.typing import ResponseReturnValue

from core.models import Sequence
from web.api.common import ApiError
from web.api.operations import operation
from web.api.routes import owned
from web.api.schemas import Response
from web.app.enrolling import check_import, enroll_checked
from web.app.importing import MAX_BYTES, ImportFileError, parse_csv
from web.db import db
from worker.sequences.enrolling import EnrollmentError

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"", "false", "0", "no"})


class ImportRefusal(Response):
    line: int
    reason: str


class ImportOut(Response):
    dry_run: bool
    enrolled: int
    accepted: list[str]
    refused: list[ImportRefusal]
    warnings: list[str]
    columns: dict[str, str]
    ignored_columns: list[str]


IMPORT_FORM = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "CSV with an email column; name, company, time_zone, phone, "
            "do_not_track are read when present",
        },
        "dry_run": {
            "type": "string",
            "enum": ["true", "false"],
            "description": "true: check every row and enrol nobody (the page's preview)",
        },
    },
}


def _dry_run() -> bool:
    raw = request.form.get("dry_run", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ApiError(422, "invalid_request", "dry_run: true or false", {"dry_run": "true or false"})


@operation(
    "POST",
    "/sequences/<int:sequence_id>/import",
    summary="Enroll prospects from a CSV file; dry_run=true checks it and enrols nobody",
    form=IMPORT_FORM,
    response=ImportOut,
    errors={
        409: "The sequence has no steps, or the team changed while enrolling (nothing enrolled)",
        422: "The file cannot be read as CSV with an email column (error.fields.file says why)",
    },
)
def import_csv(sequence_id: int) -> ResponseReturnValue:
    sequence = owned(Sequence, sequence_id, "sequence")
    dry_run = _dry_run()
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(422, "invalid_request", "file: required", {"file": "required"})
    try:
        parsed = parse_csv(upload.stream.read(MAX_BYTES + 1))
    except ImportFileError as exc:
        raise ApiError(422, "invalid_file", f"file: {exc}", {"file": str(exc)}) from None
    check = check_import(sequence, parsed)
    if not dry_run:
        if not sequence.steps:
            raise ApiError(409, "no_steps", "this sequence has no steps yet; add one, then import")
        try:
            enroll_checked(sequence, check)
            db().commit()
        except EnrollmentError as exc:
            db().rollback()
            raise ApiError(409, "cannot_enroll", f"nothing was enrolled: {exc}") from None
    out = ImportOut(
        dry_run=dry_run,
        enrolled=0 if dry_run else len(check.rows),
        accepted=[row.email for row in check.rows],
        refused=[ImportRefusal(line=b.line, reason=b.message) for b in check.bad],
        warnings=check.warnings,
        columns=parsed.columns,
        ignored_columns=parsed.ignored,
    )
    return jsonify(out.model_dump(mode="json"))
