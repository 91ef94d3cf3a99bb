"""One document's processing: claim, check, convert, inspect, render, store.

Claiming is a conditional UPDATE (status ``queued``, or a stale heartbeat) that
sets a fresh `claim_token`; every later write is conditional on that token, so
when a slow process loses its claim to another, its writes find nothing and it
stops (`SupersededError`) — another process got there first. `attempts` bounds
how often a document that keeps killing its job is tried.

Errors a person can act on become the document's `error` (`DocumentError`);
anything else releases the claim at once and re-raises, so RQ's retry (or the
recovery tick) picks it up again.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from sqlalchemy import case, delete, update
from sqlalchemy.orm import Session

from config import get_settings
from core.db import session_scope
from core.documents.sniff import FileType, UnsupportedFileError, sniff
from core.documents.storage import BlobNotFoundError, get_blob_store
from core.models import Document, DocumentPage, DocumentStatus, utcnow
from worker.documents.children import LINKS, run_sandbox, spawn_sandbox
from worker.documents.convert import ConversionError, convert_to_pdf, stop_group
from worker.documents.download import decide
from worker.documents.safety import ArchiveRejectedError, check_archive
from worker.documents.sandbox import THUMB_WIDTH, WIDTHS

log = logging.getLogger(__name__)

LEASE_SECONDS = 300
MAX_ATTEMPTS = 3
FLUSH_SECONDS = 0.25
FLUSH_PAGES = 8
IMAGE_WIDTHS = (*WIDTHS, THUMB_WIDTH)

_INSPECT_MESSAGES = {
    "damaged": "This PDF is damaged and could not be read. Export it again and upload the new "
    "copy.",
    "password": "This PDF is password-protected. Upload a copy without a password.",
    "empty": "This PDF has no pages.",
}


class DocumentError(Exception):
    """Processing cannot succeed; the message tells the uploader why and what to do."""


class SupersededError(Exception):
    """Another process took over this document's claim."""


@dataclass(frozen=True)
class Outcome:
    status: str  # ready, failed, skipped, superseded
    detail: str = ""
    pages: int = 0


def page_image_name(number: int, width: int) -> str:
    return f"p{number}-{width}.jpg"


# -- claim and conditional writes ---------------------------------------------------


def claim(document_id: int) -> tuple[str, Document] | None:
    """Take the document for processing. None if it is not ours to process now."""
    now = utcnow()
    token = secrets.token_hex(16)
    stale = now - timedelta(seconds=LEASE_SECONDS)
    with session_scope() as session:
        taken = session.execute(
            update(Document)
            .where(
                Document.id == document_id,
                Document.deleted_at.is_(None),
                (Document.status == DocumentStatus.QUEUED)
                | (
                    Document.status.in_([DocumentStatus.CONVERTING, DocumentStatus.RENDERING])
                    & ((Document.heartbeat_at.is_(None)) | (Document.heartbeat_at < stale))
                ),
            )
            .values(
                # Working from now on: a second claim finds it taken.
                status=case(
                    (Document.kind == "pdf", DocumentStatus.RENDERING.value),
                    else_=DocumentStatus.CONVERTING.value,
                ),
                claim_token=token,
                heartbeat_at=now,
                attempts=Document.attempts + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        document = session.get_one(Document, document_id)
        session.refresh(document)
        session.expunge(document)
    return token, document


def _set(session: Session, document_id: int, token: str, **values: Any) -> None:
    now = utcnow()
    done = session.execute(
        update(Document)
        .where(Document.id == document_id, Document.claim_token == token)
        .values(**{"heartbeat_at": now, "updated_at": now, **values})
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise SupersededError(f"document {document_id} was claimed by another process")


def _set_now(document_id: int, token: str, **values: Any) -> None:
    with session_scope() as session:
        _set(session, document_id, token, **values)


def _fail(document_id: int, token: str, message: str) -> None:
    with session_scope() as session:
        _set(
            session,
            document_id,
            token,
            status=DocumentStatus.FAILED,
            error=message,
            claim_token=None,
            heartbeat_at=None,
        )


def _release(document_id: int, token: str) -> None:
    """Give the claim back at once (an unexpected error): the retry may take it."""
    long_ago = utcnow() - timedelta(seconds=2 * LEASE_SECONDS)
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == document_id, Document.claim_token == token)
            .values(heartbeat_at=long_ago)
        )


# -- the steps ---------------------------------------------------------------------


def process_document(document_id: int) -> Outcome:
    """Process one document. Safe to run twice, and concurrently."""
    claimed = claim(document_id)
    if claimed is None:
        log.info("document_skipped document_id=%s", document_id)
        return Outcome("skipped")
    token, document = claimed
    started = time.monotonic()
    if document.attempts > MAX_ATTEMPTS:
        message = (
            f"Processing stopped after {MAX_ATTEMPTS} attempts that did not finish. "
            "Upload the file again; if it keeps failing, export it to PDF first."
        )
        _fail(document_id, token, message)
        return Outcome("failed", message)
    try:
        with tempfile.TemporaryDirectory(prefix="sightline-doc-") as folder:
            pages = _process(Path(folder), document, token)
    except DocumentError as exc:
        log.info("document_failed document_id=%s error=%r", document_id, str(exc))
        _fail(document_id, token, str(exc))
        return Outcome("failed", str(exc))
    except SupersededError:
        log.warning("document_superseded document_id=%s", document_id)
        return Outcome("superseded")
    except BaseException:
        log.exception("document_error document_id=%s", document_id)
        _release(document_id, token)
        raise
    log.info(
        "document_ready document_id=%s pages=%s seconds=%.2f",
        document_id,
        pages,
        time.monotonic() - started,
    )
    return Outcome("ready", pages=pages)


def _process(folder: Path, document: Document, token: str) -> int:
    store = get_blob_store()
    original = folder / "original"
    try:
        store.copy_to(document.id, "original", original)
    except BlobNotFoundError:
        raise DocumentError("The uploaded file is missing. Upload it again.") from None
    with original.open("rb") as handle:
        try:
            file_type = sniff(handle, document.name)
        except UnsupportedFileError as exc:
            raise DocumentError(str(exc)) from None
    pdf = _convert(folder, original, file_type, document, token) if file_type.office else original
    _set_now(document.id, token, status=DocumentStatus.RENDERING, progress=0, kind=file_type.kind)
    page_count, findings = _render(folder, pdf, document.id, token)
    # Within half a lease, so the heartbeat written next is never stale.
    timeout = min(get_settings().documents.render_seconds, LEASE_SECONDS // 2)
    copy = decide(folder, pdf, file_type.kind, findings, document.id, timeout)
    with session_scope() as session:
        if copy.path is not None and copy.blob is not None:
            with copy.path.open("rb") as handle:
                get_blob_store().put_file(session, document.id, copy.blob, handle)
        _set(
            session,
            document.id,
            token,
            status=DocumentStatus.READY,
            progress=100,
            page_count=page_count,
            active_content=findings,
            download_blob=copy.blob,
            download_bytes=copy.size,
            error=None,
            ready_at=utcnow(),
            claim_token=None,
            heartbeat_at=None,
        )
    return page_count


def _convert(
    folder: Path, original: Path, file_type: FileType, document: Document, token: str
) -> Path:
    settings = get_settings().documents
    _set_now(document.id, token, status=DocumentStatus.CONVERTING, progress=0)
    # LibreOffice picks its import filter by content, but names the output by the input.
    source = folder / f"document.{file_type.kind}"
    if file_type.zipped:
        try:
            check_archive(original)
        except ArchiveRejectedError as exc:
            raise DocumentError(f"This file was not opened: {exc}.") from None
        _cut_links(folder, original, source, document.id, settings.convert_seconds)
    else:
        original.rename(source)
    try:
        pdf = convert_to_pdf(
            source,
            folder,
            timeout=settings.convert_seconds,
            network_isolation=settings.network_isolation,
            file_isolation=settings.file_isolation,
        )
    except ConversionError as exc:
        raise DocumentError(f"This {file_type.label} could not be shown: {exc}.") from None
    with session_scope() as session, pdf.open("rb") as handle:
        get_blob_store().put_file(session, document.id, "document.pdf", handle)
        _set(session, document.id, token, progress=0)
    return pdf


def _cut_links(folder: Path, package: Path, target: Path, document_id: int, timeout: int) -> None:
    """Write `target`: the package with its references to local files cut (`links`)."""
    answer = run_sandbox(folder, [str(package), str(target)], "links", timeout, module=LINKS)
    if not answer.get("ok") or not target.is_file():
        # The detail names our temporary paths unless it is a refusal: the log has it.
        log.info("document_links_refused document_id=%s detail=%r", document_id, answer)
        if answer.get("refused"):
            raise DocumentError(f"This file was not opened: {answer.get('detail')}.")
        raise DocumentError(
            "This file could not be checked before conversion (it may be damaged). Export it "
            "again, or export it to PDF, and upload the new copy."
        )
    cut = answer.get("cut") or {}
    if cut:
        log.info(
            "document_links_cut document_id=%s %s",
            document_id,
            " ".join(f"{kind}={count}" for kind, count in sorted(cut.items())),
        )
    package.unlink()


def _crash_message(returncode: int | None, doing: str) -> str:
    if returncode is not None and returncode < 0:
        cause = f"signal {-returncode}"
    else:
        cause = f"exit status {returncode}"
    return (
        f"The renderer stopped while {doing} this file ({cause}; it may be damaged or "
        "too large to render). Export it again, or split it, and upload the new copy."
    )


def _refusal(verdict: dict[str, Any], max_pages: int) -> DocumentError:
    code = str(verdict.get("code"))
    if code == "too_many_pages":
        pages = int(verdict.get("detail") or 0)
        return DocumentError(
            f"This PDF has {pages:,} pages; Sightline shows documents of up to "
            f"{max_pages:,} pages. Split it and upload the part you want to send."
        )
    # The detail may name our temporary paths: it goes to the log, not to the user.
    log.info("pdf_refused code=%s detail=%r", code, str(verdict.get("detail") or "")[:300])
    return DocumentError(_INSPECT_MESSAGES.get(code, "This PDF could not be read."))


def _pump(stream: IO[bytes], inbox: queue.Queue[dict[str, Any] | None]) -> None:
    for line in stream:
        try:
            inbox.put(json.loads(line))
        except ValueError:
            inbox.put({"error": "unreadable output from the renderer"})
    inbox.put(None)


def _render(folder: Path, pdf: Path, document_id: int, token: str) -> tuple[int, list[str]]:
    """Inspect and render in the sandbox, storing pages as they come.

    Returns the page count and what the inspection found (`core.documents.findings`).
    """
    settings = get_settings().documents
    out = folder / "pages"
    out.mkdir()
    with session_scope() as session:
        session.execute(delete(DocumentPage).where(DocumentPage.document_id == document_id))
        _set(session, document_id, token, progress=0)
    deadline = time.monotonic() + settings.render_seconds
    inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
    errors = folder / "sandbox.err"
    args = ["process", str(pdf), str(out), str(settings.max_pages), str(settings.render_processes)]
    with errors.open("wb") as stderr:
        process = spawn_sandbox(folder, args, stderr)
    assert process.stdout is not None
    threading.Thread(target=_pump, args=(process.stdout, inbox), daemon=True).start()
    try:
        return _collect(process, inbox, deadline, out, document_id, token, errors)
    finally:
        if process.poll() is None:
            stop_group(process)


def _collect(
    process: subprocess.Popen[bytes],
    inbox: queue.Queue[dict[str, Any] | None],
    deadline: float,
    out: Path,
    document_id: int,
    token: str,
    errors: Path,
) -> tuple[int, list[str]]:
    page_count: int | None = None
    findings: list[str] = []
    batch: list[dict[str, Any]] = []
    stored = 0
    last_flush = time.monotonic()
    while page_count is None or stored < page_count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            doing = "Reading" if page_count is None else "Rendering"
            raise DocumentError(
                f"{doing} took longer than {get_settings().documents.render_seconds} s and was "
                "stopped. Split the document and upload the parts."
            )
        try:
            item = inbox.get(timeout=min(remaining, FLUSH_SECONDS))
        except queue.Empty:
            item = {}
        if item is None:  # the sandbox closed its output: all it will ever say is said
            process.wait()
            tail = errors.read_bytes()[-500:]
            log.warning(
                "sandbox_stopped document_id=%s returncode=%s stderr=%r",
                document_id,
                process.returncode,
                tail,
            )
            raise DocumentError(
                _crash_message(process.returncode, "reading" if page_count is None else "rendering")
            )
        if "inspect" in item:
            verdict = item["inspect"]
            if not verdict.get("ok"):
                raise _refusal(verdict, get_settings().documents.max_pages)
            page_count = int(verdict["pages"])
            findings = [str(code) for code in verdict.get("findings", [])]
        elif "error" in item:
            page = item.get("page", "?")
            raise DocumentError(
                f"Page {page} could not be rendered ({item['error']}). Export the document "
                "again and upload the new copy."
            )
        elif "page" in item:
            batch.append(json.loads((out / f"p{int(item['page'])}.json").read_text()))
        if (
            batch
            and page_count
            and (
                len(batch) >= FLUSH_PAGES
                or time.monotonic() - last_flush >= FLUSH_SECONDS
                or stored + len(batch) == page_count
            )
        ):
            stored += _store(batch, out, document_id, token, stored, page_count)
            batch = []
            last_flush = time.monotonic()
    assert page_count is not None
    return page_count, findings


def _store(
    batch: list[dict[str, Any]],
    out: Path,
    document_id: int,
    token: str,
    stored: int,
    page_count: int,
) -> int:
    """Store a batch of rendered pages (images and rows) and move the progress."""
    images: dict[str, bytes] = {}
    for item in batch:
        number = int(item["page"])
        for width in IMAGE_WIDTHS:
            path = out / page_image_name(number, width)
            images[path.name] = path.read_bytes()
            path.unlink()
    with session_scope() as session:
        get_blob_store().put_many(session, document_id, images)
        for item in batch:
            number = int(item["page"])
            session.add(
                DocumentPage(
                    document_id=document_id,
                    number=number,
                    width=int(item["width"]),
                    height=int(item["height"]),
                    text=str(item.get("text") or "").replace("\x00", ""),
                )
            )
        done = stored + len(batch)
        # 99 at most until the document is marked ready.
        _set(session, document_id, token, progress=min(99, done * 100 // page_count))
    return len(batch)
