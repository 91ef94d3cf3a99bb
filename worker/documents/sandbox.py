"""The code that runs in a sandboxed child process: PyMuPDF and Pillow live only here.

    python -m worker.documents.sandbox process PDF OUT MAX_PAGES WORKERS
    python -m worker.documents.sandbox scrub PDF TARGET
    python -m worker.documents.sandbox check PDF

`process`: one process opens the PDF and inspects it (password, damage, page
count, and the active content `worker.documents.pdf_active` finds, which is
reported, not refused: only images of the pages are ever shown), writing one
line::

    {"inspect": {"ok": true, "pages": n, "findings": [...]}}
    {"inspect": {"ok": false, "code": ...}}

then forks WORKERS - 1 copies of itself (PyMuPDF is imported once, which is
most of a child's start-up) and each renders every WORKERS-th page: the page at
1600 and 800 px wide and a 200 px thumbnail (JPEG), its text into
``OUT/p<n>.json``, then the short line ``{"page": n}`` (short lines are written
to the pipe whole). A page that fails writes ``{"page": n, "error": ...}`` and
the process exits with status 3.

`scrub`: writes a copy of the PDF without its active content to TARGET, opens
that copy afresh and walks it again, and writes one line::

    {"scrub": {"ok": true, "pages": n}}   or   {"scrub": {"ok": false, "detail": ...}}

``ok`` only when the copy opens, has the same pages and nothing is found in it.

`check`: only the inspection line of `process` (for documents shown before the
inspection looked for active content), with no page limit.

The parent (`worker.documents.pipeline`) starts this with a bare environment,
in its own process group, and kills the group on its deadline. Here the process
caps its own address space and core dumps before opening anything, so a hostile
PDF that makes MuPDF allocate without end fails here, not in the worker.

Pixel budget: each rendering is at most `MAX_PIXELS`; a page too tall or wide for
it is rendered smaller, never larger. Widths are the nominal ones the viewer
asks for; the files keep those names.

Must never: import Sightline's settings or database (nothing secret is in this
process's environment, and nothing here needs it).
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

from worker.documents.pdf_active import (
    TooLargeToCheckError,
    find_active_content,
    remove_active_content,
)

ADDRESS_SPACE_BYTES = 2 * 1024 * 1024 * 1024
WIDTHS = (1600, 800)
THUMB_WIDTH = 200
VIEW_WIDTH = 800
MAX_PIXELS = 1600 * 1600 * 3
QUALITY = {1600: 75, 800: 80, THUMB_WIDTH: 70}
TEXT_LIMIT = 20_000


def _limit_self() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _say(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _pymupdf() -> Any:
    """PyMuPDF, imported here only (it ships no type information).

    PyMuPDF 2 also imports its optional layout-analysis and Markdown add-ons
    (numpy, onnxruntime) when they are installed: most of a second per process,
    for nothing we use. A None in `sys.modules` makes those imports fail at
    once, which PyMuPDF handles as "not installed".
    """
    for optional in ("pymupdf.layout", "pymupdf4llm"):
        if optional not in sys.modules:
            sys.modules[optional] = None  # type: ignore[assignment]
    return importlib.import_module("pymupdf")


def _open(path: str) -> Any:
    pymupdf = _pymupdf()
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    return pymupdf.open(path, filetype="pdf")


def inspect(path: str, max_pages: int) -> dict[str, Any]:
    try:
        doc = _open(path)
    except Exception as exc:  # noqa: BLE001 - any failure to open means damaged
        return {"ok": False, "code": "damaged", "detail": str(exc)[:300]}
    with doc:
        if doc.needs_pass:
            return {"ok": False, "code": "password", "detail": ""}
        pages = doc.page_count
        if pages < 1:
            return {"ok": False, "code": "empty", "detail": ""}
        if pages > max_pages:
            return {"ok": False, "code": "too_many_pages", "detail": str(pages)}
        return {
            "ok": True,
            "pages": pages,
            "encrypted": bool(doc.is_encrypted),
            "findings": find_active_content(doc),
        }


def zoom_for(width_pt: float, height_pt: float, target: int) -> float:
    """The scale that makes the page `target` pixels wide, within the pixel budget."""
    zoom = target / width_pt
    if (width_pt * zoom) * (height_pt * zoom) > MAX_PIXELS:
        zoom = math.sqrt(MAX_PIXELS / (width_pt * height_pt))
    return zoom


def _jpeg(pixmap: Any, quality: int) -> bytes:
    from PIL import Image

    image = Image.frombuffer(
        "RGB", (pixmap.width, pixmap.height), pixmap.samples_mv, "raw", "RGB", pixmap.stride, 1
    )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def render_page(doc: Any, number: int, out: Path) -> dict[str, Any]:
    pymupdf = _pymupdf()

    page = doc[number - 1]
    rect = page.rect
    if rect.width < 1 or rect.height < 1:
        raise ValueError(f"page {number} has no size")
    size = (0, 0)
    for width in (*WIDTHS, THUMB_WIDTH):
        zoom = zoom_for(rect.width, rect.height, width)
        pixmap = page.get_pixmap(
            matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB
        )
        (out / f"p{number}-{width}.jpg").write_bytes(_jpeg(pixmap, QUALITY[width]))
        if width == VIEW_WIDTH:
            size = (pixmap.width, pixmap.height)
    text = page.get_text("text")[:TEXT_LIMIT]
    return {"page": number, "width": size[0], "height": size[1], "text": text}


def render_stride(doc: Any, out: Path, first: int, step: int, count: int) -> int:
    for number in range(first, count + 1, step):
        try:
            result = render_page(doc, number, out)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the document
            _say({"page": number, "error": f"{type(exc).__name__}: {exc}"[:300]})
            return 3
        (out / f"p{number}.json").write_text(json.dumps(result))
        _say({"page": number})
    return 0


def process(path: str, out: Path, max_pages: int, workers: int) -> int:
    verdict = inspect(path, max_pages)
    _say({"inspect": verdict})
    if not verdict["ok"]:
        return 0
    count = int(verdict["pages"])
    workers = max(1, min(workers, count))
    children = []
    for index in range(1, workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked copy
            code = 1
            try:
                # Its own file handle: a descriptor shared across fork shares its offset.
                with _open(path) as doc:
                    code = render_stride(doc, out, index + 1, workers, count)
            finally:
                os._exit(code)
        children.append(pid)
    with _open(path) as doc:
        status = render_stride(doc, out, 1, workers, count)
    for pid in children:
        _, raw = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(raw)
        if code != 0:
            status = status or (code if code > 0 else 128 - code)
    return status


def scrub(path: str, target: str) -> dict[str, Any]:
    """Write the copy without active content, then check it from scratch (see the docstring)."""
    try:
        with _open(path) as doc:
            pages = doc.page_count
            scrub_error = remove_active_content(doc, target)
        with _open(target) as copy:
            left = find_active_content(copy)
            if copy.needs_pass or copy.page_count != pages:
                return {"ok": False, "detail": f"the copy has {copy.page_count} of {pages} pages"}
    except TooLargeToCheckError as exc:
        return {"ok": False, "detail": f"too large to check: {exc}"}
    except Exception as exc:  # noqa: BLE001 - any failure means no copy is offered
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    if left:
        detail = f"still found after removal: {', '.join(left)}"
        if scrub_error:
            detail += f" (PyMuPDF's scrub: {scrub_error})"
        return {"ok": False, "detail": detail}
    return {"ok": True, "pages": pages}


def main(argv: list[str]) -> int:
    _limit_self()
    if len(argv) == 5 and argv[0] == "process":
        return process(argv[1], Path(argv[2]), int(argv[3]), int(argv[4]))
    if len(argv) == 3 and argv[0] == "scrub":
        _say({"scrub": scrub(argv[1], argv[2])})
        return 0
    if len(argv) == 2 and argv[0] == "check":
        _say({"inspect": inspect(argv[1], sys.maxsize)})
        return 0
    sys.stderr.write(
        "usage: python -m worker.documents.sandbox process PDF OUT MAX_PAGES WORKERS\n"
        "       python -m worker.documents.sandbox scrub PDF TARGET\n"
        "       python -m worker.documents.sandbox check PDF\n"
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
