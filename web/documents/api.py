"""Content library API: ``/api/v1/documents…`` and the documents on a sequence step.

Bearer-token authenticated like the rest of API v1, with its error shape
(`{"error": {"code", "message", "fields"}}`). A team not on the team plan gets
403 ``plan_required`` with the reason on every route here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from config import get_settings
from core.documents.findings import FINDINGS, attachment_blob, describe
from core.documents.storage import get_blob_store
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
from web.api.common import ApiError, error_response, parse_body, require_token
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

bp = Blueprint("documents_api", __name__, url_prefix="/api/v1")

# Mail systems refuse messages much past 25 MB; base64 adds a third.
MAX_ATTACHMENT_BYTES = 18 * 1024 * 1024


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentUpdate(Request):
    allow_download: bool | None = None
    expires_after_days: int | None = Field(default=None, ge=1, le=3650)
    never_expires: bool = Field(default=False, description="Links made from now on do not expire.")


class LinkUpdate(Request):
    allow_download: bool | None = None
    expires_at: datetime | None = None
    never_expires: bool = False
    revoked: bool | None = None


class StepDocument(Request):
    document_id: int = Field(ge=1, le=2**31 - 1)
    tracked: bool = True


class StepDocuments(Request):
    documents: list[StepDocument] = Field(max_length=10)


class ViewsOut(BaseModel):
    visits: int
    seconds: float
    downloads: int
    last_viewed_at: datetime | None


class DownloadOut(BaseModel):
    file_name: str = Field(description="an Office file is offered as its PDF: deck.pdf")
    content_type: str
    size_bytes: int | None


class DocumentOut(BaseModel):
    id: int
    name: str
    kind: str = Field(description="pdf, docx, doc, pptx, ppt, odt or odp: read from the content")
    content_type: str
    size_bytes: int
    sha256: str
    status: str = Field(description="queued, converting, rendering, ready or failed")
    progress: int = Field(description="percent of pages rendered")
    error: str | None = Field(description="why processing failed, in words to act on")
    page_count: int | None
    allow_download: bool
    active_content: list[str] | None = Field(
        description="what the PDF holds that a reader could act on: "
        + ", ".join(FINDINGS)
        + "; null until checked"
    )
    download: DownloadOut | None = Field(
        description="what a recipient who may download gets; null: no download is offered"
    )
    download_note: str | None = Field(
        description="in words: what was removed from the download copy, or why there is none"
    )
    expires_after_days: int | None
    created_at: datetime
    ready_at: datetime | None
    views: ViewsOut


class DocumentList(BaseModel):
    documents: list[DocumentOut]


class RecipientOut(BaseModel):
    index: int
    email: str | None
    name: str | None


class LinkOut(BaseModel):
    id: int
    document_id: int
    sent_message_id: int
    recipient: RecipientOut
    subject: str
    sent_at: datetime | None
    state: str = Field(description="active, expired or revoked")
    tracked: bool
    allow_download: bool
    expires_at: datetime | None
    revoked_at: datetime | None
    views: ViewsOut


class LinkList(BaseModel):
    links: list[LinkOut]


class LinkViewsOut(LinkOut):
    seconds_per_page: list[float]


class DocumentViews(BaseModel):
    document_id: int
    seconds_per_page: list[float] = Field(description="index 0 is page 1")
    recipients: list[LinkViewsOut]


class StepDocumentOut(BaseModel):
    document_id: int
    name: str
    tracked: bool
    status: str


class StepDocumentsOut(BaseModel):
    documents: list[StepDocumentOut]


OPENAPI_MODELS: list[type[BaseModel]] = [
    DocumentUpdate,
    LinkUpdate,
    StepDocuments,
    DocumentOut,
    DocumentList,
    LinkList,
    LinkOut,
    DocumentViews,
    StepDocumentsOut,
]


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """Add the content library's routes and schemas to the OpenAPI document."""
    ref = "#/components/schemas/{model}"
    schemas = document["components"]["schemas"]
    for model in OPENAPI_MODELS:
        schema = model.model_json_schema(
            ref_template=ref,
            mode="serialization"
            if model.__name__.endswith(("Out", "List", "Views"))
            else "validation",
        )
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema

    def body(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": ref.format(model=name)}}}

    def answer(status: str, name: str | None, summary: str, *errors: int) -> dict[str, Any]:
        texts = {
            401: "Missing or unknown API token",
            403: "Not on the team plan (error.code plan_required, with the reason)",
            404: "Not found (or not your team's)",
            409: "The document is still in a sequence step",
            413: "The file is larger than the limit",
            415: "Body is not JSON",
            422: "Invalid field (named in error.fields), or a file of a kind we do not take",
        }
        responses: dict[str, Any] = {
            status: {"description": "OK", **({"content": body(name)} if name else {})}
        }
        for code in (401, 403, *errors):
            responses[str(code)] = {"description": texts[code], "content": body("ErrorOut")}
        return {"summary": summary, "responses": responses}

    def ids(*names: str) -> list[dict[str, Any]]:
        return [
            {"name": n, "in": "path", "required": True, "schema": {"type": "integer"}}
            for n in names
        ]

    def with_body(operation: dict[str, Any], name: str) -> dict[str, Any]:
        return {**operation, "requestBody": {"required": True, "content": body(name)}}

    upload = answer("202", "DocumentOut", "Upload a document (processing starts at once)", 413, 422)
    upload["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string", "description": "shown to recipients"},
                    },
                }
            }
        },
    }
    one = {"parameters": ids("document_id")}
    step = {"parameters": ids("sequence_id", "position")}
    document["paths"].update(
        {
            "/documents": {
                "post": upload,
                "get": answer("200", "DocumentList", "The team's content library"),
            },
            "/documents/{document_id}": {
                **one,
                "get": answer("200", "DocumentOut", "A document, with its pages' text", 404),
                "patch": with_body(
                    answer("200", "DocumentOut", "Link defaults", 404, 415, 422),
                    "DocumentUpdate",
                ),
                "delete": answer("204", None, "Remove a document; its links stop", 404, 409),
            },
            "/documents/{document_id}/links": {
                **one,
                "get": answer("200", "LinkList", "Each recipient's link and views", 404),
            },
            "/documents/{document_id}/views": {
                **one,
                "get": answer("200", "DocumentViews", "Seconds per page, per recipient", 404),
            },
            "/document-links/{link_id}": {
                "parameters": ids("link_id"),
                "patch": with_body(
                    answer("200", "LinkOut", "Download, expiry, revoke", 404, 415, 422),
                    "LinkUpdate",
                ),
            },
            "/sequences/{sequence_id}/steps/{position}/documents": {
                **step,
                "get": answer("200", "StepDocumentsOut", "Documents on a step", 404),
                "put": with_body(
                    answer("200", "StepDocumentsOut", "Set a step's documents", 404, 415, 422),
                    "StepDocuments",
                ),
            },
        }
    )
    return document


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


@bp.post("/documents")
@require_token
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


@bp.get("/documents")
@require_token
def list_documents() -> ResponseReturnValue:
    _team()
    rows = db().scalars(
        select(Document)
        .where(Document.team_id == g.team_id, Document.deleted_at.is_(None))
        .order_by(Document.created_at.desc(), Document.id.desc())
        .limit(500)
    )
    return jsonify({"documents": [document_json(db(), d) for d in rows]})


@bp.get("/documents/<int:document_id>")
@require_token
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


@bp.patch("/documents/<int:document_id>")
@require_token
def update_document(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    body = parse_body(DocumentUpdate)
    if body.allow_download is not None:
        document.allow_download = body.allow_download
    if body.never_expires:
        document.expires_after_days = None
    elif body.expires_after_days is not None:
        document.expires_after_days = body.expires_after_days
    document.updated_at = utcnow()
    db().commit()
    return jsonify(document_json(db(), document))


@bp.delete("/documents/<int:document_id>")
@require_token
def delete_document(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    in_steps = db().scalar(
        select(func.count())
        .select_from(MessageDocument)
        .where(MessageDocument.document_id == document.id, MessageDocument.step_id.is_not(None))
    )
    if in_steps:
        raise ApiError(
            409,
            "document_in_use",
            f"{document.name} is in {in_steps} sequence step(s); remove it from them first",
        )
    now = utcnow()
    document.deleted_at = now
    db().execute(delete(DocumentPage).where(DocumentPage.document_id == document.id))
    get_blob_store().delete_document(db(), document.id)
    db().commit()
    return Response(status=204)


@bp.get("/documents/<int:document_id>/links")
@require_token
def list_links(document_id: int) -> ResponseReturnValue:
    _team()
    document = _document(document_id)
    return jsonify({"links": [link_json(row) for row in recipients(db(), document)]})


@bp.get("/documents/<int:document_id>/views")
@require_token
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


@bp.patch("/document-links/<int:link_id>")
@require_token
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


@bp.get("/sequences/<int:sequence_id>/steps/<int:position>/documents")
@require_token
def get_step_documents(sequence_id: int, position: int) -> ResponseReturnValue:
    _team()
    return jsonify({"documents": _step_documents(_step(sequence_id, position))})


@bp.put("/sequences/<int:sequence_id>/steps/<int:position>/documents")
@require_token
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
