"""Uploads cannot escape the document folder (SIGHTLINE_DOCUMENT_STORAGE on the filesystem).

A document's bytes live at `<folder>/<document id>/<blob name>`, where the blob
name is one of ours (`original`, `document.pdf`, `p<n>-<width>.jpg`) and never
the uploaded file name. Here hostile file names go through the API and the
library form, the real pipeline renders them, and afterwards every file under
the test's folder is inside the storage folder, named as ours; the uploaded
name survives only as a display name with no folder in it. A property test
holds the blob store itself to "a name it accepts stays inside the folder".
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from config import Settings, get_settings
from core.db import session_scope
from core.documents import storage
from core.documents.storage import FilesystemBlobStore, check_name
from core.models import Document, DocumentStatus
from tests.conftest import create_user
from tests.fixtures.documents import samples
from tests.fuzz.profiles import fuzz
from tests.integration.test_app_pages import csrf, signed_in
from tests.integration.test_feed import PASSWORD
from worker.documents.jobs import process_document_job

pytestmark = pytest.mark.integration

HOSTILE_NAMES = [
    "../../etc/passwd.pdf",
    "../../../../../../tmp/escaped.pdf",
    "/etc/cron.d/sightline.pdf",
    "..\\..\\windows\\system32\\evil.pdf",
    "....//....//double.pdf",
    "%2e%2e%2fencoded.pdf",
    "nul\x00byte.pdf",
    "..",
    "sub/dir/\u202eexe.pdf",
]


@pytest.fixture
def folder(env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "store" / "documents"
    monkeypatch.setenv("SIGHTLINE_DOCUMENT_STORAGE", str(store))
    get_settings.cache_clear()
    storage._cached.cache_clear()
    assert get_settings().documents.storage == str(store)
    return store


def everything_under(root: Path) -> list[Path]:
    return [Path(d) / f for d, _dirs, files in os.walk(root) for f in files]


def test_hostile_file_names_are_stored_inside_the_folder_only(
    app: Flask, folder: Path, tmp_path: Path
) -> None:
    token = create_user(
        app, "rep@uploads.test", "Uploads", "--plan", "team", "--password", PASSWORD
    )
    browser = signed_in(app, "rep@uploads.test")
    pdf = samples.pdf_bytes(1)
    before = set(everything_under(tmp_path))
    for n, name in enumerate(HOSTILE_NAMES):
        if n % 2:
            response = browser.post(
                "/documents",
                data={"file": (io.BytesIO(pdf), name), "csrf_token": csrf(browser, "/documents")},
                content_type="multipart/form-data",
            )
            assert response.status_code == 303, (name, response.status_code)
        else:
            response = app.test_client().post(
                "/api/v1/documents",
                data={"file": (io.BytesIO(pdf), "upload.pdf"), "name": name},
                headers={"Authorization": f"Bearer {token}"},
                content_type="multipart/form-data",
            )
            assert response.status_code == 202, (name, response.get_json())
    with session_scope() as session:
        documents = session.execute(select(Document.id, Document.name)).all()
    assert len(documents) == len(HOSTILE_NAMES)
    for document_id, _name in documents:
        process_document_job(document_id)
    with session_scope() as session:
        statuses = set(session.scalars(select(Document.status)))
    assert statuses == {DocumentStatus.READY}

    written = set(everything_under(tmp_path)) - before
    assert written, "the pipeline wrote nothing: the test proves nothing"
    ids = {str(document_id) for document_id, _ in documents}
    for path in written:
        relative = path.relative_to(folder)  # raises if outside the folder
        assert len(relative.parts) == 2 and relative.parts[0] in ids, path
        check_name(relative.parts[1])
    assert not Path("/tmp/escaped.pdf").exists()
    assert not Path("/etc/cron.d/sightline.pdf").exists()
    for _document_id, name in documents:
        assert "/" not in name and "\\" not in name and "\x00" not in name, name
        assert name not in ("", ".", ".."), name


@fuzz(300)
@given(st.text(max_size=120) | st.sampled_from(HOSTILE_NAMES))
def test_a_blob_name_the_store_accepts_stays_inside_its_folder(name: str) -> None:
    root = Path("/srv/sightline-documents")
    try:
        path = FilesystemBlobStore(root)._path(7, name)
    except ValueError:
        return  # refused: nothing is written
    resolved = Path(os.path.normpath(path))
    assert resolved.parent == root / "7", (name, resolved)
    assert "\x00" not in str(resolved)
