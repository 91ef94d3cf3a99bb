"""Do two PyMuPDF builds render our documents the same? Every page, pixel for pixel.

    python -m bench.pymupdf_renders [--before pymupdf==2.0] [--after pymupdf-lite==2.0]

requirements.in moved from the full `pymupdf` 2.0 (which requires onnxruntime, numpy,
networkx and pymupdf4llm for layout analysis we never load) to `pymupdf-lite` 2.0.
This checks the swap: it makes the test fixture documents (tests/fixtures/documents:
the sample PDF, every active-content PDF and the decoy, a scripted PDF, blank pages,
and Word, PowerPoint and OpenDocument files converted by LibreOffice as the pipeline
converts them), installs each build into a venv of its own, renders every page there
at the pipeline's widths (`bench.pymupdf_render_child`, lossless PNG) and compares
them: the same image size, how many pixel values differ and by how much, the same
text. It also prints each venv's site-packages size (`du -sm`). Asserts nothing.
Needs PyPI (the two installs) and, for the Office files, LibreOffice.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops

from bench.machine import load_note
from tests.fixtures.documents import active, samples
from worker.documents.convert import ConversionError, convert_to_pdf

ROOT = Path(__file__).resolve().parents[1]
OFFICE_KINDS = ("docx", "doc", "odt", "pptx", "ppt", "odp")


def fixture_pdfs(folder: Path) -> list[Path]:
    """Write every fixture document as a PDF into `folder`; Office files through LibreOffice."""
    made: dict[str, bytes] = {
        "sample": samples.pdf_bytes(12),
        "javascript": samples.javascript_pdf(),
        "blank": samples.many_pages_pdf(20),
        "everything": active.everything(),
        "everything-objstm": active.everything(objstm=True),
        "decoy": active.decoy(),
        "goto-export": active.goto_export(),
    }
    made.update({f"active-{name}": active.with_feature(name) for name in active.FEATURES})
    for name, data in made.items():
        (folder / f"{name}.pdf").write_bytes(data)
    if shutil.which("soffice") is None:
        print("LibreOffice not installed: Office fixtures left out", file=sys.stderr)
    else:
        for kind in OFFICE_KINDS:
            work = folder / f"work-{kind}"
            source = work / f"office-{kind}.{kind}"
            work.mkdir()
            source.write_bytes(samples.office_bytes(kind, 3, work / "make"))
            try:
                pdf = convert_to_pdf(source, work, timeout=120)
            except ConversionError as exc:
                print(f"{kind}: not converted ({exc})", file=sys.stderr)
                continue
            pdf.rename(folder / f"office-{kind}.pdf")
    return sorted(folder.glob("*.pdf"))


@dataclass
class Build:
    spec: str
    venv: Path
    out: Path
    version: str = ""
    site_mb: int = 0


def install(build: Build) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(build.venv)], check=True)
    pip = [str(build.venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--only-binary", ":all:", build.spec], check=True)
    site = next(build.venv.glob("lib/python3*/site-packages"))
    du = subprocess.run(["du", "-sm", str(site)], check=True, capture_output=True, text=True)
    build.site_mb = int(du.stdout.split()[0])


def render(build: Build, manifest: Path) -> int:
    build.out.mkdir()
    done = subprocess.run(
        [
            str(build.venv / "bin" / "python"),
            *("-m", "bench.pymupdf_render_child", str(manifest), str(build.out)),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    said = json.loads(done.stdout.strip().splitlines()[-1])
    build.version = f"PyMuPDF {said['version']}, MuPDF {said['mupdf'][1]}"
    return int(said["pages"])


@dataclass
class Difference:
    images: int = 0
    same_size: int = 0
    identical: int = 0
    values: int = 0
    differing_values: int = 0
    max_difference: int = 0
    texts: int = 0
    same_text: int = 0


def compare(before: Path, after: Path) -> Difference:
    diff = Difference()
    for image in sorted(before.glob("*.png")):
        diff.images += 1
        with Image.open(image) as old, Image.open(after / image.name) as new:
            if old.size != new.size:
                continue
            diff.same_size += 1
            delta = ImageChops.difference(old.convert("RGB"), new.convert("RGB"))
            histogram = delta.histogram()  # 256 counts per channel
            values = sum(histogram)
            unchanged = sum(histogram[band * 256] for band in range(3))
            diff.values += values
            diff.differing_values += values - unchanged
            _low, high = zip(*delta.getextrema(), strict=True)
            diff.max_difference = max(diff.max_difference, *high)
            diff.identical += values == unchanged
    for text in sorted(before.glob("*.txt")):
        diff.texts += 1
        diff.same_text += text.read_text() == (after / text.name).read_text()
    return diff


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="pymupdf==2.0")
    parser.add_argument("--after", default="pymupdf-lite==2.0")
    args = parser.parse_args()
    load = load_note()
    with tempfile.TemporaryDirectory(prefix="pymupdf-renders-") as scratch:
        root = Path(scratch)
        (root / "pdf").mkdir()
        pdfs = fixture_pdfs(root / "pdf")
        manifest = root / "manifest.json"
        manifest.write_text(json.dumps([str(p) for p in pdfs]))
        builds = [
            Build(args.before, root / "venv-before", root / "before"),
            Build(args.after, root / "venv-after", root / "after"),
        ]
        pages = []
        for build in builds:
            install(build)
            pages.append(render(build, manifest))
            print(f"{build.spec}: {build.version}, site-packages {build.site_mb} MB")
        diff = compare(builds[0].out, builds[1].out)
    share = diff.differing_values / diff.values * 100 if diff.values else 0.0
    print(
        f"pymupdf renders: {len(pdfs)} documents, {pages[0]}/{pages[1]} pages, "
        f"{diff.images} images: same size {diff.same_size}, identical {diff.identical}, "
        f"differing pixel values {diff.differing_values} of {diff.values} ({share:.4f}%), "
        f"max difference {diff.max_difference}/255, same text {diff.same_text}/{diff.texts}; "
        f"site-packages {builds[0].site_mb} MB -> {builds[1].site_mb} MB, {load}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
