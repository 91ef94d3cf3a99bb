"""Converting an upload draws no local file into it: no other team's page, no secret.

An Office file can point LibreOffice at a file on the worker's disk, by an
absolute path, a ``file://`` URL or a relative ``../`` path, from a linked
picture, a slide background, a shape's fill, a fill bitmap, a linked OLE object
or section, a field (tests/fixtures/documents/local_links.py). The targets here
stand for what a team must never see: another team's page image in the
document storage folder (a picture of one flat, unmistakable colour, named like
a page image) and a secret (a line of text). On the code before this
protection, LibreOffice drew the picture into PPTX, ODP and ODT uploads and
the secret, as text, into a PPTX: both were on the pages a team's members view.
Whether a target got in is read from what the viewer shows: the colour in the
rendered page images, the secret in the pages' text.

- In the private filesystem view (bubblewrap: the default where the machine
  allows it) LibreOffice converts the files exactly as uploaded, links and
  all, and finds no target: they are not in its world.
- With no namespaces (a Heroku dyno: `unshare` and `bwrap` refuse), the links
  cut from each package before conversion keep the targets out: through the
  API and the real `documents` job, with folder storage holding the targets.
- By default both hold, and the worker logs that the files are private.
- ``SIGHTLINE_DOCUMENT_FILE_ISOLATION=required`` refuses to convert where no
  view can be made, with a sentence.
- A child in either view (LibreOffice's, the renderer's) sees no data and
  reaches no network; the same child outside sees both (so the check can fail).
"""

from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymupdf
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image, ImageChops

from config import get_settings
from core.documents import storage
from core.documents.storage import get_blob_store
from tests.conftest import create_user
from tests.fixtures.documents import local_links
from tests.security.test_office_links import no_namespaces, use_isolation
from tests.services.process import in_ci
from worker.documents import isolation
from worker.documents.children import python_paths
from worker.documents.convert import convert_to_pdf, find_soffice, libreoffice_paths
from worker.documents.jobs import process_document_job

pytestmark = pytest.mark.integration
postgres_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
# Pixels within this distance of the marker colour, per channel, count as the marker
# (JPEG blurs a flat colour a little); this many of them on a page is a leak.
TOLERANCE = 40
LEAK_PIXELS = 50


class Targets:
    """What a document must not reach: a page image of another team, and a secret."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder  # the document storage folder
        self.secret = f"sightline-secret-{secrets.token_hex(8)}"
        image = Image.new("RGB", (1600, 900), local_links.MARKER_RGB)
        image.save(folder / "0" / local_links.IMAGE, "JPEG", quality=75)
        (folder / "0" / local_links.SECRET).write_text(self.secret + "\n")

    def leaks(self, pages: list[tuple[Image.Image, str]]) -> list[str]:
        """What of the targets shows on these pages (image, text): empty when nothing."""
        found = []
        for number, (image, text) in enumerate(pages, start=1):
            if self.secret in text:
                found.append(f"page {number}: the secret, in its text")
            marked = marker_pixels(image)
            if marked >= LEAK_PIXELS:
                found.append(f"page {number}: {marked} pixels of the other team's page image")
        return found


def marker_pixels(image: Image.Image) -> int:
    low = tuple(max(0, c - TOLERANCE) for c in local_links.MARKER_RGB)
    high = tuple(min(255, c + TOLERANCE) for c in local_links.MARKER_RGB)
    # Each band thresholded to the marker's range, then the three ANDed: 255 where all match.
    bands = [
        band.point(lambda v, lo=lo, hi=hi: 255 if lo <= v <= hi else 0)
        for band, lo, hi in zip(image.convert("RGB").split(), low, high, strict=True)
    ]
    matched = ImageChops.multiply(ImageChops.multiply(bands[0], bands[1]), bands[2])
    return int(matched.histogram()[255])


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Targets:
    return Targets(local_links.folder_of_placeholder_length(tmp_path_factory.mktemp("local")))


@pytest.fixture(scope="module")
def files(targets: Targets) -> dict[str, bytes]:
    return {kind: local_links.load(kind, targets.folder) for kind in local_links.KINDS}


def test_the_marker_check_sees_the_target_when_it_is_on_a_page(targets: Targets) -> None:
    image = Image.open(targets.folder / "0" / local_links.IMAGE).resize((800, 450))
    assert targets.leaks([(image, f"text {targets.secret}")]) == [
        "page 1: the secret, in its text",
        "page 1: 360000 pixels of the other team's page image",
    ]
    assert targets.leaks([(Image.new("RGB", (800, 450), "white"), "sample")]) == []


def pdf_pages(pdf: Path) -> list[tuple[Image.Image, str]]:
    """Each page of `pdf` as the viewer would show it: an 800-px-wide image and its text."""
    pages = []
    with pymupdf.open(pdf) as document:
        for page in document:
            zoom = 800 / page.rect.width
            pixmap = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
            image = Image.frombytes("RGB", (pixmap.width, pixmap.height), pixmap.samples)
            pages.append((image, page.get_text()))
    return pages


def require_view() -> None:
    isolation.detect.cache_clear()
    found = isolation.detect()
    if found.bwrap is None:
        message = f"no private filesystem view can be made here: {found.files_reason}"
        if in_ci():
            pytest.fail(message + " (CI runs as root on Debian 12 with bubblewrap)")
        pytest.skip(message)


@pytest.mark.parametrize("kind", ["pptx", "odp", "odt", "docx"])
def test_in_the_private_view_libreoffice_finds_no_local_file_a_document_points_at(
    kind: str, files: dict[str, bytes], targets: Targets, tmp_path: Path
) -> None:
    require_view()
    source = tmp_path / f"document.{kind}"
    source.write_bytes(files[kind])  # as uploaded: nothing cut
    pdf = convert_to_pdf(source, tmp_path, timeout=120, network_isolation="off")
    pages = pdf_pages(pdf)
    assert targets.leaks(pages) == []
    assert any("sample" in text for _image, text in pages), [t for _i, t in pages]


# -- through the API and the real job ---------------------------------------------


@pytest.fixture
def token(app: Flask, targets: Targets, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SIGHTLINE_DOCUMENT_STORAGE", str(targets.folder))
    get_settings.cache_clear()
    storage._cached.cache_clear()
    assert get_settings().documents.storage == str(targets.folder)
    return create_user(app, "rep@local-files.test", "Local files", "--plan", "team")


def upload_and_process(client: FlaskClient, token: str, name: str, data: bytes) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post(
        "/api/v1/documents",
        data={"file": (io.BytesIO(data), name)},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202, response.get_json()
    document_id = response.get_json()["id"]
    process_document_job(document_id)
    body: dict[str, Any] = client.get(
        f"/api/v1/documents/{document_id}", headers=headers
    ).get_json()
    return body


def viewed_pages(body: dict[str, Any]) -> list[tuple[Image.Image, str]]:
    """The pages a team member sees: the stored 800-px images and the pages' text."""
    store = get_blob_store()
    return [
        (
            Image.open(io.BytesIO(store.get(body["id"], f"p{page['number']}-800.jpg"))),
            str(page["text"]),
        )
        for page in body["pages"]
    ]


def assert_nothing_drawn_in(
    client: FlaskClient, token: str, files: dict[str, bytes], targets: Targets
) -> None:
    """Each file uploaded and processed: ready, its own text shown, no target on any page."""
    leaks = {}
    for kind, data in files.items():
        body = upload_and_process(client, token, f"local.{kind}", data)
        assert body["status"] == "ready", (kind, body)
        pages = viewed_pages(body)
        assert any("sample" in text for _image, text in pages), (kind, body["pages"])
        if found := targets.leaks(pages):
            leaks[kind] = found
    assert leaks == {}


@postgres_only
def test_with_no_namespaces_the_links_cut_from_the_package_keep_local_files_out(
    client: FlaskClient,
    token: str,
    files: dict[str, bytes],
    targets: Targets,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    no_namespaces(tmp_path, monkeypatch)  # what a Heroku dyno gets
    use_isolation(monkeypatch, "auto", files="auto")
    assert not isolation.detect().network
    with caplog.at_level("INFO", logger="worker.documents.pipeline"):
        assert_nothing_drawn_in(client, token, files, targets)
    cut = [r.getMessage() for r in caplog.records if "document_links_cut" in r.getMessage()]
    assert len(cut) == 4, cut  # one per ZIP-based file: DOCX, PPTX, ODT, ODP


@postgres_only
def test_by_default_the_view_and_the_cut_links_both_hold(
    client: FlaskClient,
    token: str,
    files: dict[str, bytes],
    targets: Targets,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in ("SIGHTLINE_DOCUMENT_NETWORK_ISOLATION", "SIGHTLINE_DOCUMENT_FILE_ISOLATION"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    isolation.detect.cache_clear()
    with caplog.at_level("INFO", logger="worker.documents.isolation"):
        assert_nothing_drawn_in(client, token, {"pptx": files["pptx"]}, targets)
    said = [r.getMessage() for r in caplog.records if "document_isolation" in r.getMessage()]
    assert len(said) == 1, said
    if isolation.detect().bwrap is not None:
        assert "files=private" in said[0], said


@postgres_only
def test_required_file_isolation_refuses_to_convert_where_no_view_can_be_made(
    client: FlaskClient,
    token: str,
    files: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    no_namespaces(tmp_path, monkeypatch)
    use_isolation(monkeypatch, "auto", files="required")
    refused = upload_and_process(client, token, "local.ppt", files["ppt"])
    assert refused["status"] == "failed"
    assert "with no access to this server's files" in refused["error"], refused["error"]
    assert "SIGHTLINE_DOCUMENT_FILE_ISOLATION=required" in refused["error"]


@postgres_only
def test_a_file_whose_links_cannot_be_checked_is_refused_with_the_reason(
    client: FlaskClient, token: str
) -> None:
    """An entity can hide a path from the check: no Office file declares one, so it is refused."""
    package = zipfile.ZipFile(io.BytesIO(local_links.load_placeholder("docx")))
    hidden = '<!DOCTYPE w:document [<!ENTITY picture "file:///etc/passwd">]>'
    parts = {info.filename: package.read(info.filename) for info in package.infolist()}
    document = parts["word/document.xml"].decode()
    declaration, rest = document.split("?>", 1)
    parts["word/document.xml"] = (declaration + "?>" + hidden + rest).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    refused = upload_and_process(client, token, "entities.docx", out.getvalue())
    assert refused["status"] == "failed"
    assert refused["error"] == (
        "This file was not opened: its part word/document.xml declares XML entities, which "
        "Office files never do."
    )


# -- what a child in a view can see and reach --------------------------------------

PROBE = """
import socket, sys
seen = []
for path in sys.argv[2:]:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
        seen.append(path)
    except OSError:
        pass
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), 3).close()
    seen.append("network")
except OSError:
    pass
print(" ".join(seen))
"""


@pytest.fixture
def port() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # for `env` only
@pytest.mark.parametrize("child", ["libreoffice", "renderer"])
def test_a_child_in_a_view_sees_no_data_and_reaches_no_network(
    child: str,
    env: Any,
    targets: Targets,
    tmp_path: Path,
    port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_view()
    monkeypatch.setenv("SIGHTLINE_DOCUMENT_STORAGE", str(targets.folder))
    get_settings.cache_clear()
    secret_key = env.var_dir / "secret_key"  # where a local run keeps its key
    secret_key.parent.mkdir(parents=True, exist_ok=True)
    secret_key.write_text("not the real one\n")
    job = tmp_path / "job"
    job.mkdir()
    (job / "mine").write_text("the job's own file\n")
    reads = (*isolation.system_paths(), *python_paths())
    if child == "libreoffice":
        reads += libreoffice_paths(find_soffice())
    view = isolation.View(read=reads, write=(job,), cwd=job)
    data = [
        str(targets.folder / "0" / local_links.IMAGE),
        str(targets.folder / "0" / local_links.SECRET),
        str(secret_key),
        str(Path(__file__)),  # the app's own folder
        f"/proc/{os.getpid()}/environ",  # the worker's environment
    ]
    probe = [sys.executable, "-c", PROBE, str(port), *data, str(job / "mine")]

    def run(command: list[str]) -> list[str]:
        done = subprocess.run(command, capture_output=True, check=True, timeout=30)
        return done.stdout.decode().split()

    assert run(probe) == [*data, str(job / "mine"), "network"]  # outside: all of it
    inside = isolation.isolate(probe, network="auto", files="auto", view=view)
    assert inside[0] == isolation.detect().bwrap
    assert run(inside) == [str(job / "mine")]  # inside: its own folder, nothing else


def test_data_inside_a_read_root_is_covered_and_code_inside_it_shown_again(
    tmp_path: Path,
) -> None:
    """An app installed under a system folder (/usr/src/app): its var/ must not show through."""
    require_view()
    system = tmp_path / "usr"  # stands for a read root such as /usr
    app = system / "src" / "app"
    for path, text in {
        system / "share" / "fonts.conf": "a system file",
        app / "var" / "secret_key": "a key",
        app / ".env": "DATABASE_URL=...",
        app / "worker" / "code.py": "our code",
    }.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    job = tmp_path / "job"
    job.mkdir()
    view = isolation.View(
        read=(*isolation.system_paths(), system, app / "worker"), write=(job,), cwd=job
    )
    arguments = isolation.bwrap_arguments(view, network=True, hide=(app, app / "var"))
    files = [system / "share" / "fonts.conf", app / "var" / "secret_key", app / ".env"]
    files.append(app / "worker" / "code.py")
    shell = "for f in " + " ".join(map(str, files)) + '; do [ -r "$f" ] && echo "$f"; done; true'
    bwrap = isolation.detect().bwrap
    assert bwrap is not None
    done = subprocess.run(
        [bwrap, *arguments, "--", "/bin/sh", "-c", shell], capture_output=True, check=True
    )
    assert done.stdout.decode().split() == [str(files[0]), str(files[3])]
