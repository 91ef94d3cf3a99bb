"""A document's download copy: what a recipient who may download gets, decided once.

    what the sandbox found in the PDF that is shown
        nothing      ─▶ a PDF upload: "original" (byte for byte what was uploaded)
                        an Office upload: "document.pdf" (the PDF made from it)
        something    ─▶ sandbox `scrub`: a copy without it, re-read from scratch and
                        walked again ─▶ "download.pdf" when nothing is left in it,
                        else no download at all (the page and API say why)
        "unchecked"  ─▶ no download

Office uploads are offered as the PDF, never as the original file: a .doc, .ppt
or .odt can hold macros (only the macro-enabled OOXML formats are refused at
upload), and any Office file can hold links Word and PowerPoint follow when it
is opened (a remote template, a linked OLE object, a DDE field). None of that
is what the recipient read, and none of it can be removed reliably; the PDF is
exactly what they read in the viewer.

`check_document(document_id)` serves documents made ready before this existed
(`active_content` NULL): the recovery tick queues it; it inspects the stored
PDF in the sandbox and records the same decision. Its writes are conditional on
the row still being unchecked, so running it twice (or alongside a re-upload)
records one answer.

Must never: offer a copy that was not re-read and found clean, or open the PDF
in this process (the sandbox does, `worker.documents.children`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import update

from config import get_settings
from core.db import session_scope
from core.documents import findings as codes
from core.documents.storage import BlobNotFoundError, get_blob_store
from core.models import Document, DocumentStatus, utcnow
from worker.documents.children import run_sandbox

log = logging.getLogger(__name__)

ORIGINAL = "original"
CONVERTED = "document.pdf"
SCRUBBED = "download.pdf"


@dataclass(frozen=True)
class DownloadCopy:
    """The blob a download serves and its size, or both None: no download."""

    blob: str | None
    size: int | None
    path: Path | None = None  # a file to store as `blob` (the scrubbed copy), if any


def decide(
    folder: Path, pdf: Path, kind: str, findings: list[str], document_id: int, timeout: float
) -> DownloadCopy:
    """What a download of this document serves (see the module docstring)."""
    if not findings:
        if kind == "pdf":
            return DownloadCopy(ORIGINAL, pdf.stat().st_size)
        return DownloadCopy(CONVERTED, pdf.stat().st_size)
    if codes.UNCHECKED in findings:
        log.warning("document_download_off document_id=%s reason=unchecked", document_id)
        return DownloadCopy(None, None)
    target = folder / SCRUBBED
    answer = run_sandbox(folder, ["scrub", str(pdf), str(target)], "scrub", timeout)
    if not answer.get("ok") or not target.is_file():
        log.warning(
            "document_download_off document_id=%s findings=%s detail=%r",
            document_id,
            ",".join(findings),
            str(answer.get("detail", ""))[:300],
        )
        return DownloadCopy(None, None)
    log.info(
        "document_scrubbed document_id=%s findings=%s bytes=%s",
        document_id,
        ",".join(findings),
        target.stat().st_size,
    )
    return DownloadCopy(SCRUBBED, target.stat().st_size, target)


def check_document(document_id: int) -> str:
    """Inspect an unchecked ready document and record its download copy. Returns what happened."""
    with session_scope() as session:
        document = session.get(Document, document_id)
        if (
            document is None
            or document.deleted_at is not None
            or document.status != DocumentStatus.READY
            or document.active_content is not None
        ):
            return "skipped"
        kind = document.kind
    source = ORIGINAL if kind == "pdf" else CONVERTED
    timeout = get_settings().documents.render_seconds
    with tempfile.TemporaryDirectory(prefix="sightline-check-") as name:
        folder = Path(name)
        pdf = folder / "document.pdf"
        try:
            get_blob_store().copy_to(document_id, source, pdf)
        except BlobNotFoundError:
            log.error("document_check_missing document_id=%s blob=%s", document_id, source)
            return "missing"
        verdict = run_sandbox(folder, ["check", str(pdf)], "inspect", timeout)
        if not verdict.get("ok"):
            # It was shown before: what it holds is unknown, so nothing is offered.
            log.warning("document_check_failed document_id=%s verdict=%r", document_id, verdict)
            found = [codes.UNCHECKED]
        else:
            found = [str(code) for code in verdict.get("findings", [])]
        copy = decide(folder, pdf, kind, found, document_id, timeout)
        with session_scope() as session:
            if copy.path is not None and copy.blob is not None:
                with copy.path.open("rb") as handle:
                    get_blob_store().put_file(session, document_id, copy.blob, handle)
            session.execute(
                update(Document)
                .where(Document.id == document_id, Document.active_content.is_(None))
                .values(
                    active_content=found,
                    download_blob=copy.blob,
                    download_bytes=copy.size,
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
    log.info("document_checked document_id=%s findings=%s", document_id, ",".join(found))
    return "checked"
