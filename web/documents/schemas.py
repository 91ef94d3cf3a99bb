"""The content library API's request and answer shapes.

The models `web.documents.api` validates and serialises with; its routes name
them in their `@operation`, which puts them in `GET /api/v1/openapi.json`, so
the document cannot drift from what the routes do.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from core.documents.findings import FINDINGS


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
