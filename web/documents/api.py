"""Content library API: ``/api/v1/documents…`` and the documents on a sequence step.

Bearer-token authenticated like the rest of API v1, with its error shape
(`{"error": {"code", "message", "fields"}}`). A team not on the team plan gets
403 ``plan_required`` with the reason on every route here. The request and
answer models are `web.documents.schemas`'; each route describes itself in the
OpenAPI document with `web.api.operations.operation`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from sqlalchemy import delete, select
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from config import get_settings
from core.documents.findings import attachment_blob, describe
from core.models import (
    Document,
    DocumentLink,
    DocumentPage,
    DocumentStatus,
    MessageDocument,
    Sequence,
    SequenceStep,
    Team,
    utcnow,
)
from web.api.common import ApiError, error_response, parse_body
from web.api.operations import operation
from web.db import db
from web.documents.common import (
    PLAN_MESSAGE,
    UploadError,
    create_document,
    document_json,
    enqueue_processing,
    has_plan,
    link_json,
    megabytes,
    recipients,
    seconds_per_page,
    seconds_per_page_by_link,
    team_document,
)
from web.documents.manage import ManageError, remove, rename, replace
from web.documents.schemas import (
    DocumentList,
    DocumentOut,
    DocumentUpdate,
    DocumentViews,
    LinkList,
    LinkOut,
    LinkUpdate,
    StepDocuments,
    StepDocumentsOut,
)

bp = Blueprint("documents_api", __name__, url_prefix="/api/v1")

# Mail systems refuse messages much past 25 MB; base64 adds a third.
MAX_ATTACHMENT_BYTES = 18 * 1024 * 1024
PLAN = {403: "Not on the team plan (error.code plan_required, with the reason)"}
TOO_LARGE = "The file is larger than the limit"
FILE_REFUSED = "Invalid field (named in error.fields), or a file of a kind we do not take"
FILE = {"file": {"type": "string", "format": "binary"}}
FILE_FORM = {"type": "object", "required": ["file"], "properties": FILE}


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.code, exc.message, exc.fields)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge) -> Response:
    limit = get_settings().documents.max_bytes
    return error_response(
        413, "file_too_large", f"the largest file Sightline takes is {megabytes(limit)}"
    )


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_response(exc.code or 500, code, exc.description or exc.name or "error")


def _team() -> Team:
    team = db().get_one(Team, g.team_id)
    if not has_plan(team):
        raise ApiError(403, "plan_required", PLAN_MESSAGE)
    return team


def _document(document_id: int) -> Document:
    document = team_document(db(), g.team_id, document_id)
    if document is None:
        raise ApiError(404, "not_found", f"document {document_id} not found")
    return document


@operation(
    "POST",
    "/documents",
    summary="Upload a document (processing starts at once)",
    form={
        **FILE_FORM,
        "properties": {**FILE, "name": {"type": "string", "description": "shown to recipients"}},
    },
    response=DocumentOut,
    status=202,
    errors={**PLAN, 413: TOO_LARGE, 422: FILE_REFUSED},
    blueprint=bp,
)
def upload() -> ResponseReturnValue:
    _team()
    request.max_content_length = get_settings().documents.max_bytes + 1024 * 1024
    upload_file = request.files.get("file")
    if upload_file is None:
        raise ApiError(
            422,
            "invalid_request",
            "file: send the document as multipart/form-data field 'file'",
            {"file": "required"},
        )
    try:
        document = create_document(
            db(), g.user, upload_file.stream, request.form.get("name") or upload_file.filename
        )
    except UploadError as exc:
        code = "file_too_large" if exc.status == 413 else "unsupported_file"
        raise ApiError(exc.status, code, str(exc), {"file": str(exc)}) from None
    db().commit()
    enqueue_processing(document.id)
    response = jsonify(document_json(db(), document))
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/documents/{document.id}"
    return response


@operation(
    "GET",
    "/documents",
    summary="The team's content library",
    response=DocumentList,
    errors=PLAN,
    blueprint=bp,
)
def list_documents() -> ResponseReturnValue:
    _team()
    rows = db().scalars(
        select(Document)
        .where(Document.team_id == g.team_id, Document.deleted_at.is_(None))
        .order_by(Document.created_at.desc(), Document.id.desc())
        .limit(500)
    )
    return jsonify({"documents": [document_json(db(), d) for d in rows]})


@operation(
    "GET",
    "/documents/<int:document_id>",
    summary="A document, with its pages' text",
    response=DocumentOut,
    errors=PLAN,
    blueprint=bp,
)
def get_document(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    body = document_json(db(), document)
    body["pages"] = [
        {"number": p.number, "width": p.width, "height": p.height, "text": p.text}
        for p in db().scalars(
            select(DocumentPage)
            .where(DocumentPage.document_id == document.id)
            .order_by(DocumentPage.number)
        )
    ]
    return jsonify(body)


@operation(
    "PATCH",
    "/documents/<int:document_id>",
    summary="Rename, link defaults",
    body=DocumentUpdate,
    response=DocumentOut,
    errors=PLAN,
    blueprint=bp,
)
def update_document(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    body = parse_body(DocumentUpdate)
    if body.name is not None:
        try:
            rename(document, body.name)
        except ManageError as exc:
            raise ApiError(exc.status, exc.code, str(exc), {"name": str(exc)}) from None
    if body.allow_download is not None:
        document.allow_download = body.allow_download
    if body.never_expires:
        document.expires_after_days = None
    elif body.expires_after_days is not None:
        document.expires_after_days = body.expires_after_days
    document.updated_at = utcnow()
    db().commit()
    return jsonify(document_json(db(), document))


@operation(
    "DELETE",
    "/documents/<int:document_id>",
    summary="Remove a document; its links stop",
    status=204,
    errors={**PLAN, 409: "Still in a sequence step"},
    blueprint=bp,
)
def delete_document(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    try:
        remove(db(), document)
    except ManageError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    db().commit()
    return Response(status=204)


@operation(
    "PUT",
    "/documents/<int:document_id>/file",
    summary="Replace the file: same links, the new version shown once processed",
    form=FILE_FORM,
    response=DocumentOut,
    status=202,
    errors={**PLAN, 409: "Still being prepared", 413: TOO_LARGE, 422: FILE_REFUSED},
    blueprint=bp,
)
def replace_file(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    request.max_content_length = get_settings().documents.max_bytes + 1024 * 1024
    upload_file = request.files.get("file")
    if upload_file is None:
        raise ApiError(
            422,
            "invalid_request",
            "file: send the new file as multipart/form-data field 'file'",
            {"file": "required"},
        )
    try:
        replace(db(), document, upload_file.stream, upload_file.filename)
    except UploadError as exc:
        code = "file_too_large" if exc.status == 413 else "unsupported_file"
        raise ApiError(exc.status, code, str(exc), {"file": str(exc)}) from None
    except ManageError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    db().commit()
    enqueue_processing(document.id)
    response = jsonify(document_json(db(), document))
    response.status_code = 202
    return response


@operation(
    "GET",
    "/documents/<int:document_id>/links",
    summary="Each recipient's link and views",
    response=LinkList,
    errors=PLAN,
    blueprint=bp,
)
def list_links(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    return jsonify({"links": [link_json(row) for row in recipients(db(), document)]})


@operation(
    "GET",
    "/documents/<int:document_id>/views",
    summary="Seconds per page, per recipient",
    response=DocumentViews,
    errors=PLAN,
    blueprint=bp,
)
def views(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    rows = recipients(db(), document)
    per_link = seconds_per_page_by_link(db(), document)
    empty = [0.0] * (document.page_count or 0)
    return jsonify(
        {
            "document_id": document.id,
            "seconds_per_page": seconds_per_page(db(), document),
            "recipients": [
                {
                    **link_json(row),
                    "seconds_per_page": per_link.get(row.link.id, empty),
                }
                for row in rows
            ],
        }
    )


@operation(
    "PATCH",
    "/document-links/<int:link_id>",
    summary="Download, expiry, revoke",
    body=LinkUpdate,
    response=LinkOut,
    errors=PLAN,
    blueprint=bp,
)
def update_link(link_id: int) -> ResponseReturnValue:
    _team()
    link = db().get(DocumentLink, link_id)
    if link is None or link.team_id != g.team_id:
        raise ApiError(404, "not_found", f"document link {link_id} not found")
    body = parse_body(LinkUpdate)
    apply_link_update(link, body)
    db().commit()
    document = db().get_one(Document, link.document_id)
    row = next(r for r in recipients(db(), document) if r.link.id == link.id)
    return jsonify(link_json(row))


def apply_link_update(link: DocumentLink, body: LinkUpdate) -> None:
    if body.allow_download is not None:
        link.allow_download = body.allow_download
    if body.never_expires:
        link.expires_at = None
    elif body.expires_at is not None:
        if body.expires_at.tzinfo is None:
            raise ApiError(
                422,
                "invalid_request",
                "expires_at: give a time zone (e.g. 2026-12-31T17:00:00Z)",
                {"expires_at": "give a time zone"},
            )
        link.expires_at = body.expires_at
    if body.revoked is True and link.revoked_at is None:
        link.revoked_at = utcnow()
    elif body.revoked is False:
        link.revoked_at = None


def _step(sequence_id: int, position: int) -> SequenceStep:
    sequence = db().get(Sequence, sequence_id)
    if sequence is None or sequence.team_id != g.team_id:
        raise ApiError(404, "not_found", f"sequence {sequence_id} not found")
    step = next((s for s in sequence.steps if s.position == position), None)
    if step is None:
        raise ApiError(404, "not_found", f"sequence {sequence_id} has no step {position}")
    return step


def _step_documents(step: SequenceStep) -> list[dict[str, Any]]:
    rows = db().execute(
        select(MessageDocument, Document)
        .join(Document, Document.id == MessageDocument.document_id)
        .where(MessageDocument.step_id == step.id)
        .order_by(MessageDocument.position)
    )
    return [
        {"document_id": d.id, "name": d.name, "tracked": m.tracked, "status": d.status}
        for m, d in rows
    ]


@operation(
    "GET",
    "/sequences/<int:sequence_id>/steps/<int:position>/documents",
    summary="Documents on a step",
    response=StepDocumentsOut,
    errors=PLAN,
    blueprint=bp,
)
def get_step_documents(sequence_id: int, position: int) -> ResponseReturnValue:
    _team()
    return jsonify({"documents": _step_documents(_step(sequence_id, position))})


@operation(
    "PUT",
    "/sequences/<int:sequence_id>/steps/<int:position>/documents",
    summary="Set a step's documents",
    body=StepDocuments,
    response=StepDocumentsOut,
    errors=PLAN,
    blueprint=bp,
)
def put_step_documents(sequence_id: int, position: int) -> ResponseReturnValue:
    _team()
    step = _step(sequence_id, position)
    body = parse_body(StepDocuments)
    seen: set[int] = set()
    plain_bytes = 0
    for index, item in enumerate(body.documents):
        field = f"documents.{index}.document_id"
        if item.document_id in seen:
            message = "listed twice"
            raise ApiError(422, "invalid_request", f"{field}: {message}", {field: message})
        seen.add(item.document_id)
        document = team_document(db(), g.team_id, item.document_id)
        if document is None:
            raise ApiError(
                422, "invalid_request", f"{field}: no such document", {field: "no such document"}
            )
        if document.status != DocumentStatus.READY:
            message = f"{document.name} is {document.status}; only ready documents can be added"
            raise ApiError(422, "invalid_request", f"{field}: {message}", {field: message})
        if not item.tracked:
            blob = attachment_blob(document.kind, document.active_content, document.download_blob)
            if blob is None:
                found = describe(document.active_content or [])
                message = (
                    f"{document.name} contains {found}, which could not be removed: "
                    "send it as a tracked link"
                )
                raise ApiError(422, "invalid_request", f"{field}: {message}", {field: message})
            plain_bytes += (
                document.size_bytes if blob == "original" else document.download_bytes or 0
            )
    if plain_bytes > MAX_ATTACHMENT_BYTES:
        message = (
            f"plain attachments add up to {megabytes(plain_bytes)}; mail systems refuse "
            f"messages much larger than {megabytes(MAX_ATTACHMENT_BYTES)}: send the large "
            "ones as tracked links"
        )
        raise ApiError(422, "invalid_request", f"documents: {message}", {"documents": message})
    db().execute(delete(MessageDocument).where(MessageDocument.step_id == step.id))
    for index, item in enumerate(body.documents):
        db().add(
            MessageDocument(
                team_id=g.team_id,
                document_id=item.document_id,
                step_id=step.id,
                tracked=item.tracked,
                position=index,
            )
        )
    db().commit()
    return jsonify({"documents": _step_documents(step)})
