"""Renaming, replacing and deleting a library document: what the pages and the API share.

    rename  ─▶ documents.name (what recipients see: viewer, download, new feed items;
               items already in the feed keep the name they were recorded with)
    replace ─▶ checked like an upload ─▶ same row, id, links and tokens; the old
               file's pages and blobs deleted, the new original stored, version + 1,
               status queued ─▶ the documents job renders it again
    delete  ─▶ refused while a sequence step carries it ─▶ deleted_at, pages and
               blobs deleted; the row, its links, visits and events stay

After a replace a link shows "being prepared", then the new version (page image
URLs carry the version, so no browser shows a cached page of the old file). Old
visits keep their page views and say which version they read
(`document_visits.document_version`); the per-page charts count the current
version's visits only, since page 4 of the new file is not page 4 of the old.
A viewer still open on the old version has its beacons refused (409).

A deleted document's links answer 410 "This document was removed" (web.documents.viewer).

Must never: replace a document a documents job is working on (its claim would
store the old file's pages over the new), or touch another team's document (the
callers look it up through `team_document`).
"""

from __future__ import annotations

import logging
from typing import IO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.documents.storage import get_blob_store
from core.models import Document, DocumentPage, DocumentStatus, MessageDocument, utcnow
from web.documents.common import PROCESSING, UploadError, check_upload, clean_name

log = logging.getLogger(__name__)


class ManageError(ValueError):
    """A change we refuse; `status` is the HTTP status, `code` the API's error code."""

    def __init__(self, message: str, status: int = 409, code: str = "conflict") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def rename(document: Document, raw_name: str) -> None:
    """Give the document a new title. Raises ManageError for an empty one."""
    if not raw_name.strip():
        raise ManageError("Name: enter the title recipients see.", 422, "invalid_request")
    document.name = clean_name(raw_name)
    document.updated_at = utcnow()
    log.info("document_renamed document_id=%s", document.id)


def steps_using(session: Session, document: Document) -> int:
    found = session.scalar(
        select(func.count())
        .select_from(MessageDocument)
        .where(MessageDocument.document_id == document.id, MessageDocument.step_id.is_not(None))
    )
    return int(found or 0)


def replace(session: Session, document: Document, stream: IO[bytes], filename: str | None) -> None:
    """Put a new file behind the same document and links. The caller commits, then enqueues.

    Raises:
        UploadError: the file is refused, as an upload would be.
        ManageError: the document is being processed (status 409).
    """
    if document.status in PROCESSING:
        raise ManageError(
            f"{document.name} is still being prepared: replace it once it is ready.",
            409,
            "document_busy",
        )
    checked = check_upload(stream, filename)
    store = get_blob_store()
    session.execute(delete(DocumentPage).where(DocumentPage.document_id == document.id))
    store.delete_document(session, document.id)
    document.kind, document.content_type = checked.kind, checked.content_type
    document.size_bytes, document.sha256 = checked.size, checked.sha256
    document.status, document.progress, document.error = DocumentStatus.QUEUED, 0, None
    document.page_count, document.attempts = None, 0
    document.claim_token, document.heartbeat_at = None, None
    document.active_content, document.download_blob, document.download_bytes = None, None, None
    document.ready_at = None
    document.version += 1
    document.updated_at = utcnow()
    store.put_file(session, document.id, "original", stream)
    log.info(
        "document_replaced document_id=%s version=%s kind=%s bytes=%s",
        document.id,
        document.version,
        checked.kind,
        checked.size,
    )


def remove(session: Session, document: Document) -> None:
    """Delete the document's file and pages; its links then say it was removed.

    Raises:
        ManageError: a sequence step still sends it (status 409).
    """
    in_steps = steps_using(session, document)
    if in_steps:
        raise ManageError(
            f"{document.name} is in {in_steps} sequence step{'s' if in_steps != 1 else ''}: "
            "remove it from them first.",
            409,
            "document_in_use",
        )
    document.deleted_at = utcnow()
    session.execute(delete(DocumentPage).where(DocumentPage.document_id == document.id))
    get_blob_store().delete_document(session, document.id)
    log.info("document_deleted document_id=%s", document.id)


__all__ = ["ManageError", "UploadError", "remove", "rename", "replace", "steps_using"]
