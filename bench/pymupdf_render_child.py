"""Renders PDFs with whatever PyMuPDF its interpreter has: the child of `bench.pymupdf_renders`.

    python -m bench.pymupdf_render_child MANIFEST OUT

MANIFEST is a JSON list of PDF paths. Every page of each is rendered at the
pipeline's widths and scale (`worker.documents.sandbox.zoom_for`: 1600 and 800 px
and the 200 px thumbnail) to a lossless PNG, ``OUT/<pdf stem>-p<n>-<width>.png``,
and its text to ``OUT/<pdf stem>-p<n>.txt``. The last line written to stdout is
the PyMuPDF and MuPDF version. Imports only PyMuPDF and the sandbox module (no
settings, no database), so a venv holding nothing but one PyMuPDF build runs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pymupdf

from worker.documents.sandbox import THUMB_WIDTH, WIDTHS, zoom_for


def render(manifest: Path, out: Path) -> int:
    pages = 0
    for name in json.loads(manifest.read_text()):
        pdf = Path(name)
        with pymupdf.open(pdf) as doc:
            for number, page in enumerate(doc, start=1):
                for width in (*WIDTHS, THUMB_WIDTH):
                    zoom = zoom_for(page.rect.width, page.rect.height, width)
                    pixmap = page.get_pixmap(
                        matrix=pymupdf.Matrix(zoom, zoom), alpha=False, colorspace=pymupdf.csRGB
                    )
                    pixmap.save(str(out / f"{pdf.stem}-p{number}-{width}.png"))
                (out / f"{pdf.stem}-p{number}.txt").write_text(page.get_text("text"))
                pages += 1
    print(json.dumps({"pages": pages, "version": pymupdf.VersionBind, "mupdf": pymupdf.version}))
    return 0


if __name__ == "__main__":
    sys.exit(render(Path(sys.argv[1]), Path(sys.argv[2])))
