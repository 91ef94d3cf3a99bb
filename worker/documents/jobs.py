"""RQ entry points for documents, and the tick that recovers stalled ones.

Importing this module is cheap: PyMuPDF and LibreOffice run in child processes,
never in the importer, and the pipeline module itself adds 0.4 MiB RSS and 6 ms
to the web process (measured after `create_app()`), which imports this module
to enqueue, by dotted path, on the `documents` queue.

The tick also queues a check of documents that were made ready before the
pipeline looked for active content (`active_content` NULL), a bounded number
per tick: `worker.documents.download.check_document` records their download copy.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from config import queues
from core.db import session_scope
from core.models import Document, DocumentStatus, utcnow
from worker.documents.download import check_document
from worker.documents.pipeline import LEASE_SECONDS, process_document
from worker.queueing import enqueue_once, job_started

log = logging.getLogger(__name__)

JOB_TIMEOUT = 1800
QUEUED_GRACE_SECONDS = 60
CHECKS_PER_TICK = 100


def _key(document_id: int) -> str:
    return f"document:{document_id}"


def request_processing(document_id: int) -> bool:
    """Queue the document's processing unless a job for it is already waiting."""
    return enqueue_once(
        _key(document_id),
        queues.DOCUMENTS,
        "worker.documents.jobs.process_document_job",
        document_id,
        timeout=JOB_TIMEOUT,
        ttl=JOB_TIMEOUT,
    )


def process_document_job(document_id: int) -> str:
    job_started(_key(document_id))
    return process_document(document_id).status


def _check_key(document_id: int) -> str:
    return f"document-check:{document_id}"


def request_check(document_id: int) -> bool:
    """Queue the active-content check of a document shown before it existed."""
    return enqueue_once(
        _check_key(document_id),
        queues.DOCUMENTS,
        "worker.documents.jobs.check_document_job",
        document_id,
        timeout=JOB_TIMEOUT,
        ttl=JOB_TIMEOUT,
    )


def check_document_job(document_id: int) -> str:
    job_started(_check_key(document_id))
    return check_document(document_id)


def queue_unchecked_documents() -> int:
    """Queue checks for ready documents without findings (made before they were recorded)."""
    with session_scope() as session:
        ids = session.scalars(
            select(Document.id)
            .where(
                Document.deleted_at.is_(None),
                Document.status == DocumentStatus.READY,
                Document.active_content.is_(None),
            )
            .order_by(Document.id)
            .limit(CHECKS_PER_TICK)
        ).all()
    queued = sum(1 for document_id in ids if request_check(int(document_id)))
    if queued:
        log.info("documents_unchecked found=%s queued=%s", len(ids), queued)
    return queued


def recover_documents() -> int:
    """Re-queue documents whose job was lost: queued long ago, or a stale heartbeat."""
    now = utcnow()
    with session_scope() as session:
        ids = session.scalars(
            select(Document.id).where(
                Document.deleted_at.is_(None),
                (
                    (Document.status == DocumentStatus.QUEUED)
                    & (Document.updated_at < now - timedelta(seconds=QUEUED_GRACE_SECONDS))
                )
                | (
                    Document.status.in_([DocumentStatus.CONVERTING, DocumentStatus.RENDERING])
                    & (Document.heartbeat_at < now - timedelta(seconds=LEASE_SECONDS))
                ),
            )
        ).all()
    queued = sum(1 for document_id in ids if request_processing(int(document_id)))
    if ids:
        log.info("documents_recovered found=%s queued=%s", len(ids), queued)
    queue_unchecked_documents()
    return queued
