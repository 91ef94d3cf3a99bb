"""The content library API's request and answer shapes, and its part of the OpenAPI document.

The models `web.documents.api` validates and serialises with; `extend_document`
adds their schemas and the library's routes to `GET /api/v1/openapi.json`
(web/api/openapi.py), so the document cannot drift from what the routes do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.documents.findings import FINDINGS
from web.api.openapi_parts import add_schemas, json_content


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentUpdate(Request):
    name: str | None = Field(
        default=None, min_length=1, max_length=255, description="The title recipients see."
    )
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
    version: int = Field(description="1 for the upload; each replace of the file adds one")
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
    add_schemas(
        document,
        OPENAPI_MODELS,
        lambda model: (
            "serialization" if model.__name__.endswith(("Out", "List", "Views")) else "validation"
        ),
    )
    body = json_content

    def answer(status: str, name: str | None, summary: str, *errors: int) -> dict[str, Any]:
        texts = {
            401: "Missing or unknown API token",
            403: "Not on the team plan (error.code plan_required, with the reason)",
            404: "Not found (or not your team's)",
            409: "Deleting: still in a sequence step; replacing: still being prepared",
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
    replace = answer(
        "202",
        "DocumentOut",
        "Replace the file: same links, the new version shown once processed",
        404,
        409,
        413,
        422,
    )
    replace["requestBody"] = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
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
                    answer("200", "DocumentOut", "Rename, link defaults", 404, 415, 422),
                    "DocumentUpdate",
                ),
                "delete": answer("204", None, "Remove a document; its links stop", 404, 409),
            },
            "/documents/{document_id}/file": {
                **one,
                "put": replace,
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
