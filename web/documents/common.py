"""What the library pages and the API share: uploads, plan checks, summaries, downloads."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from redis.exceptions import RedisError
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from config import get_settings
from core.documents.findings import download_note
from core.documents.sniff import UnsupportedFileError, sniff
from core.documents.storage import get_blob_store
from core.models import (
    Document,
    DocumentLink,
    DocumentPageView,
    DocumentStatus,
    DocumentVisit,
    Plan,
    Prospect,
    SentMessage,
    Team,
    User,
    utcnow,
)
from worker.documents.jobs import request_processing

log = logging.getLogger(__name__)

PLAN_MESSAGE = (
    "Trackable attachments are part of the Team plan, and your team is on the Solo plan. "
    "On the Team plan you upload a PDF, Word or PowerPoint file once, add it to emails as a "
    "link, and see when each recipient opens it, which pages they read and for how long. "
    "Plain attachments are not affected. Ask whoever runs your Sightline to move your team "
    "to the Team plan."
)
COUNTED_CLASS = "person"
PROCESSING = (DocumentStatus.QUEUED, DocumentStatus.CONVERTING, DocumentStatus.RENDERING)


class UploadError(ValueError):
    """An upload we refuse; `status` is the HTTP status, the message says why."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def has_plan(team: Team) -> bool:
    return team.plan == Plan.TEAM


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def clean_name(raw: str | None) -> str:
    """A display file name: no folders, no control characters, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    name = re.sub(r"\s+", " ", name)
    if not name or name in (".", ".."):
        name = "document"
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 250 - len(ext)] + dot + ext) if dot and len(ext) <= 10 else name[:255]
    return name


def _size(stream: IO[bytes]) -> int:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that passed: its display name and what its content is."""

    name: str
    size: int
    kind: str
    content_type: str
    sha256: str


def check_upload(stream: IO[bytes], filename: str | None) -> CheckedUpload:
    """Check a file as an upload or a replacement; `stream` is left at its start.

    Raises:
        UploadError: empty, too large, or not a kind we accept (the message says which).
    """
    limit = get_settings().documents.max_bytes
    name = clean_name(filename)
    size = _size(stream)
    if size == 0:
        raise UploadError(f"{name} is empty.")
    if size > limit:
        raise UploadError(
            f"{name} is {megabytes(size)}; the largest file Sightline takes is "
            f"{megabytes(limit)}. Compress its images or split it, and upload it again.",
            413,
        )
    try:
        file_type = sniff(stream, name)
    except UnsupportedFileError as exc:
        raise UploadError(str(exc)) from None
    digest = hashlib.sha256()
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    stream.seek(0)
    return CheckedUpload(name, size, file_type.kind, file_type.content_type, digest.hexdigest())


def create_document(
    session: Session, user: User, stream: IO[bytes], filename: str | None
) -> Document:
    """Check an upload and keep it as a queued document. The caller commits, then enqueues.

    Raises:
        UploadError: empty, too large, or not a kind we accept (the message says which).
    """
    checked = check_upload(stream, filename)
    now = utcnow()
    document = Document(
        team_id=user.team_id,
        user_id=user.id,
        name=checked.name,
        kind=checked.kind,
        content_type=checked.content_type,
        size_bytes=checked.size,
        sha256=checked.sha256,
        status=DocumentStatus.QUEUED,
        progress=0,
        created_at=now,
        updated_at=now,
    )
    session.add(document)
    session.flush()
    get_blob_store().put_file(session, document.id, "original", stream)
    log.info(
        "document_uploaded document_id=%s team_id=%s kind=%s bytes=%s",
        document.id,
        user.team_id,
        checked.kind,
        checked.size,
    )
    return document


def enqueue_processing(document_id: int) -> None:
    """Queue the job; if Redis is away, the recovery tick queues it later (nothing lost)."""
    try:
        request_processing(document_id)
    except (RedisError, OSError) as exc:
        log.warning(
            "document_enqueue_failed document_id=%s error=%s", document_id, type(exc).__name__
        )


def team_document(session: Session, team_id: int, document_id: int) -> Document | None:
    document = session.get(Document, document_id)
    if document is None or document.team_id != team_id or document.deleted_at is not None:
        return None
    return document


def counted() -> Any:
    """The visits that count: a person, in a page that reported visible time."""
    return and_(DocumentVisit.hit_class == COUNTED_CLASS, DocumentVisit.confirmed_at.is_not(None))


def seconds_per_page(
    session: Session, document: Document, link_id: int | None = None
) -> list[float]:
    """Seconds on each page (index 0 = page 1) over counted visits of the current version."""
    query = (
        select(DocumentPageView.page, func.sum(DocumentPageView.ms))
        .join(DocumentVisit, DocumentVisit.id == DocumentPageView.visit_id)
        .where(
            DocumentVisit.document_id == document.id,
            DocumentVisit.document_version
            == document.version,  # these pages, not a replaced file's
            counted(),
        )
        .group_by(DocumentPageView.page)
    )
    if link_id is not None:
        query = query.where(DocumentVisit.link_id == link_id)
    values = [0.0] * (document.page_count or 0)
    for page, ms in session.execute(query):
        if 1 <= page <= len(values):
            values[page - 1] = round(float(ms or 0) / 1000, 1)
    return values


@dataclass(frozen=True)
class VisitSummary:
    visits: int
    seconds: float
    last_at: datetime | None
    downloads: int


def visit_summary(session: Session, document_id: int, link_id: int | None = None) -> VisitSummary:
    query = select(
        func.count(DocumentVisit.id),
        func.coalesce(func.sum(DocumentVisit.total_ms), 0),
        func.max(DocumentVisit.last_seen_at),
        func.count(DocumentVisit.downloaded_at),
    ).where(DocumentVisit.document_id == document_id, counted())
    if link_id is not None:
        query = query.where(DocumentVisit.link_id == link_id)
    visits, ms, last_at, downloads = session.execute(query).one()
    return VisitSummary(int(visits), round(float(ms) / 1000, 1), last_at, int(downloads))


def link_state(link: DocumentLink, now: datetime | None = None) -> str:
    now = now or utcnow()
    if link.revoked_at is not None:
        return "revoked"
    if link.expires_at is not None and link.expires_at <= now:
        return "expired"
    return "active"


def summaries_by_link(session: Session, document_id: int) -> dict[int, VisitSummary]:
    """`visit_summary` for every link of a document, in one query."""
    rows = session.execute(
        select(
            DocumentVisit.link_id,
            func.count(DocumentVisit.id),
            func.coalesce(func.sum(DocumentVisit.total_ms), 0),
            func.max(DocumentVisit.last_seen_at),
            func.count(DocumentVisit.downloaded_at),
        )
        .where(DocumentVisit.document_id == document_id, counted())
        .group_by(DocumentVisit.link_id)
    )
    return {
        int(link_id): VisitSummary(int(visits), round(float(ms) / 1000, 1), last_at, int(downloads))
        for link_id, visits, ms, last_at, downloads in rows
    }


def seconds_per_page_by_link(session: Session, document: Document) -> dict[int, list[float]]:
    """`seconds_per_page` for every link with counted visits, in one query."""
    rows = session.execute(
        select(DocumentVisit.link_id, DocumentPageView.page, func.sum(DocumentPageView.ms))
        .join(DocumentVisit, DocumentVisit.id == DocumentPageView.visit_id)
        .where(
            DocumentVisit.document_id == document.id,
            DocumentVisit.document_version == document.version,
            counted(),
        )
        .group_by(DocumentVisit.link_id, DocumentPageView.page)
    )
    pages = document.page_count or 0
    found: dict[int, list[float]] = {}
    for link_id, page, ms in rows:
        values = found.setdefault(int(link_id), [0.0] * pages)
        if 1 <= page <= pages:
            values[page - 1] = round(float(ms or 0) / 1000, 1)
    return found


@dataclass(frozen=True)
class RecipientRow:
    link: DocumentLink
    email: str | None
    name: str | None
    subject: str
    sent_at: datetime | None
    summary: VisitSummary
    state: str


def recipients(session: Session, document: Document) -> list[RecipientRow]:
    rows = session.execute(
        select(
            DocumentLink, Prospect.email, Prospect.name, SentMessage.subject, SentMessage.sent_at
        )
        .join(SentMessage, SentMessage.id == DocumentLink.sent_message_id)
        .outerjoin(Prospect, Prospect.id == DocumentLink.prospect_id)
        .where(DocumentLink.document_id == document.id)
        .order_by(DocumentLink.created_at.desc(), DocumentLink.id.desc())
    )
    now = utcnow()
    summaries = summaries_by_link(session, document.id)
    nothing = VisitSummary(0, 0.0, None, 0)
    out = []
    for link, prospect_email, name, subject, sent_at in rows:
        email = prospect_email
        if email is None:
            sent = session.get_one(SentMessage, link.sent_message_id)
            addresses = [*sent.to_addrs, *sent.cc_addrs]
            email = addresses[link.recipient] if link.recipient < len(addresses) else None
        out.append(
            RecipientRow(
                link=link,
                email=email,
                name=name,
                subject=subject,
                sent_at=sent_at,
                summary=summaries.get(link.id, nothing),
                state=link_state(link, now),
            )
        )
    return out


@dataclass(frozen=True)
class DownloadFile:
    """What a download of a document serves (`worker.documents.download` decided it)."""

    blob: str
    file_name: str
    content_type: str
    size: int | None


def download_file(document: Document) -> DownloadFile | None:
    """The file a recipient who may download gets, or None when none may be offered.

    A PDF comes as uploaded, or as the copy without its active content; an Office
    file always as the PDF made from it, named like it (deck.pptx → deck.pdf).
    """
    blob = document.download_blob
    if blob is None:
        return None
    if blob == "original":
        return DownloadFile(blob, document.name, document.content_type, document.size_bytes)
    name = document.name
    if document.kind != "pdf":
        stem, dot, _extension = name.rpartition(".")
        name = f"{stem if dot else name}.pdf"
    return DownloadFile(blob, name, "application/pdf", document.download_bytes)


def document_download_note(document: Document) -> str | None:
    """The sentence about the download copy for the document's page and the API."""
    if document.status != DocumentStatus.READY:
        return None
    return download_note(document.active_content, document.kind, document.download_blob is not None)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def document_json(session: Session, document: Document) -> dict[str, Any]:
    summary = visit_summary(session, document.id)
    return {
        "id": document.id,
        "name": document.name,
        "version": document.version,
        "kind": document.kind,
        "content_type": document.content_type,
        "size_bytes": document.size_bytes,
        "sha256": document.sha256,
        "status": document.status,
        "progress": document.progress,
        "error": document.error,
        "page_count": document.page_count,
        "allow_download": document.allow_download,
        "active_content": document.active_content,
        "download": _download_json(document),
        "download_note": document_download_note(document),
        "expires_after_days": document.expires_after_days,
        "created_at": iso(document.created_at),
        "ready_at": iso(document.ready_at),
        "views": {
            "visits": summary.visits,
            "seconds": summary.seconds,
            "downloads": summary.downloads,
            "last_viewed_at": iso(summary.last_at),
        },
    }


def _download_json(document: Document) -> dict[str, Any] | None:
    found = download_file(document)
    if found is None:
        return None
    return {
        "file_name": found.file_name,
        "content_type": found.content_type,
        "size_bytes": found.size,
    }


def link_json(row: RecipientRow) -> dict[str, Any]:
    link = row.link
    return {
        "id": link.id,
        "document_id": link.document_id,
        "sent_message_id": link.sent_message_id,
        "recipient": {"index": link.recipient, "email": row.email, "name": row.name},
        "subject": row.subject,
        "sent_at": iso(row.sent_at),
        "state": row.state,
        "tracked": link.tracked,
        "allow_download": link.allow_download,
        "expires_at": iso(link.expires_at),
        "revoked_at": iso(link.revoked_at),
        "views": {
            "visits": row.summary.visits,
            "seconds": row.summary.seconds,
            "downloads": row.summary.downloads,
            "last_viewed_at": iso(row.summary.last_at),
        },
    }
