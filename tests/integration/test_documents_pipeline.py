"""Trackable attachments, upload to pages: real LibreOffice, real PyMuPDF, real services.

Uploads go through the API; processing runs the `documents` job function in
this process, except for hostile files, which go to the Procfile's own `documents`
process to prove a bad file leaves it standing.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import func, select, update

from config import Settings, get_settings
from core.db import session_scope
from core.documents.storage import (
    CHUNK_BYTES,
    BlobNotFoundError,
    DatabaseBlobStore,
    FilesystemBlobStore,
    get_blob_store,
)
from core.models import Document, DocumentBlob, DocumentStatus, utcnow
from core.redis import get_redis
from tests.conftest import create_user, service_environment
from tests.fixtures.documents import samples
from tests.stack import Stack
from worker.documents import pipeline
from worker.documents.convert import ConversionError, convert_to_pdf
from worker.documents.jobs import process_document_job, recover_documents

pytestmark = pytest.mark.integration


def js(response: Any) -> Any:
    """A response's JSON body (typed loosely: tests index into it)."""
    return response.get_json()


# One database is enough for what LibreOffice does; the rest runs on both.
postgres_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


class Api:
    def __init__(self, client: FlaskClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    def upload(self, data: bytes, filename: str) -> Any:
        return self.client.post(
            "/api/v1/documents",
            data={"file": (io.BytesIO(data), filename)},
            headers=self.headers,
            content_type="multipart/form-data",
        )

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)


@pytest.fixture
def team_api(app: Flask, client: FlaskClient) -> Api:
    return Api(client, create_user(app, "rep@team.test", "Team Plan", "--plan", "team"))


@pytest.fixture(scope="module")
def office_samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("office")
    return {kind: samples.office_bytes(kind, 3, folder / kind) for kind in samples.TARGETS}


def uploaded(api: Api, data: bytes, filename: str) -> int:
    response = api.upload(data, filename)
    assert response.status_code == 202, response.json
    assert js(response)["status"] == "queued"
    return int(js(response)["id"])


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return image.size


def test_a_pdf_becomes_pages_at_two_widths_with_thumbnails_and_text(team_api: Api) -> None:
    document_id = uploaded(team_api, samples.pdf_bytes(3, title="Pricing"), "pricing.pdf")
    assert process_document_job(document_id) == "ready"

    body = team_api.get(f"/api/v1/documents/{document_id}").json
    assert (body["status"], body["progress"], body["page_count"], body["kind"]) == (
        "ready",
        100,
        3,
        "pdf",
    )
    assert [p["number"] for p in body["pages"]] == [1, 2, 3]
    assert "Pricing Page 2" in body["pages"][1]["text"]
    store = get_blob_store()
    width, height = jpeg_size(store.get(document_id, "p2-800.jpg"))
    assert (width, height) == (body["pages"][1]["width"], body["pages"][1]["height"])
    assert (width == 800 and height == round(800 * 842 / 595)) or abs(height - 1132) <= 1
    assert jpeg_size(store.get(document_id, "p2-1600.jpg"))[0] == 1600
    assert jpeg_size(store.get(document_id, "p2-200.jpg"))[0] == 200


def test_running_the_job_twice_processes_once(team_api: Api) -> None:
    document_id = uploaded(team_api, samples.pdf_bytes(1), "one.pdf")
    assert process_document_job(document_id) == "ready"
    assert process_document_job(document_id) == "skipped"
    with session_scope() as session:
        pages = session.scalar(select(func.count()).where(DocumentBlob.document_id == document_id))
    assert pages == 1 + 3  # the original and three images of the one page


def test_a_stale_claim_is_taken_over_and_the_old_writer_stops(team_api: Api) -> None:
    document_id = uploaded(team_api, samples.pdf_bytes(2), "two.pdf")
    first = pipeline.claim(document_id)
    assert first is not None
    assert pipeline.claim(document_id) is None  # fresh heartbeat: not ours to take
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(
                status=DocumentStatus.RENDERING,
                heartbeat_at=utcnow() - timedelta(seconds=pipeline.LEASE_SECONDS + 1),
            )
        )
    assert process_document_job(document_id) == "ready"
    with pytest.raises(pipeline.SupersededError), session_scope() as session:
        pipeline._set(session, document_id, first[0], progress=1)


@postgres_only
@pytest.mark.parametrize("kind", list(samples.TARGETS))
def test_office_files_are_converted_by_content_not_name(
    team_api: Api, office_samples: dict[str, bytes], kind: str
) -> None:
    # Named .pdf on purpose: the content decides.
    document_id = uploaded(team_api, office_samples[kind], f"deck-{kind}.pdf")
    assert js(team_api.get(f"/api/v1/documents/{document_id}"))["kind"] == kind
    assert process_document_job(document_id) == "ready"
    body = team_api.get(f"/api/v1/documents/{document_id}").json
    assert body["page_count"] == 3, body
    word = "Slide" if kind in ("pptx", "ppt", "odp") else "Page"
    assert f"{word} 3" in body["pages"][2]["text"]
    assert get_blob_store().get(document_id, "document.pdf").startswith(b"%PDF-")


@pytest.mark.parametrize(
    ("data", "name", "said"),
    [
        (samples.png_bytes(), "pricing.pdf", "pricing.pdf is a PNG image"),
        (b"just some notes\n", "notes.docx", "notes.docx is plain text"),
        (b"<!doctype html><html><body>hi</body></html>", "page.pptx", "a web page (HTML)"),
        (b"", "empty.pdf", "empty.pdf is empty"),
    ],
    ids=["png-as-pdf", "text-as-docx", "html-as-pptx", "empty-pdf"],
)
def test_a_file_that_is_not_what_its_name_says_is_refused_with_a_reason(
    team_api: Api, data: bytes, name: str, said: str
) -> None:
    response = team_api.upload(data, name)
    assert response.status_code == 422
    assert said in js(response)["error"]["message"]
    assert "Upload a PDF" in js(response)["error"]["message"] or "empty" in said
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Document)) == 0


def test_a_file_over_the_size_limit_is_refused(
    app: Flask, team_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGHTLINE_DOCUMENT_MAX_MB", "1")
    get_settings.cache_clear()
    response = team_api.upload(samples.pdf_bytes(1) + b"\n%" + b"x" * (1024 * 1024), "big.pdf")
    assert response.status_code == 413
    assert "1.0 MB" in js(response)["error"]["message"]


def test_a_solo_team_gets_403_with_the_reason(app: Flask, client: FlaskClient) -> None:
    solo = Api(client, create_user(app, "me@solo.test", "Just Me"))
    response = solo.upload(samples.pdf_bytes(1), "a.pdf")
    assert response.status_code == 403
    assert js(response)["error"]["code"] == "plan_required"
    assert "Team plan" in js(response)["error"]["message"]
    assert solo.get("/api/v1/documents").status_code == 403


def test_another_team_cannot_see_a_document(app: Flask, client: FlaskClient, team_api: Api) -> None:
    document_id = uploaded(team_api, samples.pdf_bytes(1), "mine.pdf")
    other = Api(client, create_user(app, "rep@other.test", "Other Team", "--plan", "team"))
    assert other.get(f"/api/v1/documents/{document_id}").status_code == 404
    assert other.get("/api/v1/documents").json == {"documents": []}


def test_libreoffice_past_its_deadline_is_killed_with_its_whole_group(
    env: Settings, office_samples: dict[str, bytes], tmp_path: Path
) -> None:
    source = tmp_path / "slow.pptx"
    source.write_bytes(office_samples["pptx"])
    started = time.monotonic()
    with pytest.raises(ConversionError, match=r"took longer than 0\.2 s"):
        convert_to_pdf(source, tmp_path, timeout=0.2)
    assert time.monotonic() - started < 5
    profile = str(tmp_path / "lo-profile")

    def survivors() -> list[str]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except (OSError, IndexError):
                continue
            if state != "Z" and profile in cmdline:
                found.append(f"{entry.name} {cmdline[:80]!r}")
        return found

    # SIGKILL is delivered at once; give the kernel a moment to tear the group down.
    deadline = time.monotonic() + 3
    while (left := survivors()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], "a LibreOffice process outlived its deadline"


@pytest.fixture
def worker_stack(
    env: Settings, database_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Stack]:
    environment = service_environment(database_url, redis_url, env.var_dir)
    running = Stack(environment, tmp_path / "logs").start("documents")
    yield running
    running.stop()


@postgres_only
def test_hostile_files_fail_with_a_clear_reason_and_the_worker_carries_on(
    team_api: Api, worker_stack: Stack
) -> None:
    hostile = {
        "encrypted.pdf": (samples.encrypted_pdf(), "password-protected"),
        "corrupt.pdf": (samples.corrupt_pdf(), "damaged"),
        "huge.pdf": (samples.many_pages_pdf(2000), "has 2,000 pages"),
        "bomb.docx": (samples.zip_bomb_docx(), "expands to 320 MB"),
        "lying-bomb.docx": (samples.lying_zip_bomb_docx(), "was not opened"),
    }
    ids = {name: uploaded(team_api, data, name) for name, (data, _said) in hostile.items()}
    good = uploaded(team_api, samples.pdf_bytes(2), "fine.pdf")
    # Scripts are not refused: the pages are shown as images, the download is without them.
    scripted = uploaded(team_api, samples.javascript_pdf(), "script.pdf")

    def settled() -> dict[int, Any] | None:
        every = [*ids.values(), good, scripted]
        found = {i: team_api.get(f"/api/v1/documents/{i}").json for i in every}
        done = all(d["status"] in ("ready", "failed") for d in found.values())
        return found if done else None

    found = worker_stack.wait_for("every document to settle", settled, timeout=90)
    for name, (_data, said) in hostile.items():
        body = found[ids[name]]
        assert body["status"] == "failed", (name, body)
        assert said in body["error"], (name, body["error"])
        assert "/tmp" not in body["error"]
    assert found[good]["status"] == "ready"
    assert found[scripted]["status"] == "ready"
    assert found[scripted]["active_content"] == ["javascript", "open_action"]
    assert found[scripted]["download"]["file_name"] == "script.pdf"
    assert worker_stack.running["documents"].poll() is None, "the documents worker died"


def test_a_lost_job_is_queued_again_by_the_recovery_tick(team_api: Api) -> None:
    document_id = uploaded(team_api, samples.pdf_bytes(1), "lost.pdf")
    get_redis().flushdb()  # the job and its marker are gone, as after a Redis failover
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == document_id)
            .values(updated_at=utcnow() - timedelta(minutes=5))
        )
    assert recover_documents() == 1
    assert get_redis().llen("rq:queue:documents") == 1
    assert recover_documents() == 0  # one waiting job is enough


@pytest.mark.parametrize("backend", ["database", "filesystem"])
def test_blob_stores_round_trip_in_bounded_chunks(
    env: Settings, team_api: Api, tmp_path: Path, backend: str
) -> None:
    document_id = uploaded(team_api, samples.pdf_bytes(1), "store.pdf")
    store = DatabaseBlobStore() if backend == "database" else FilesystemBlobStore(tmp_path)
    data = os.urandom(CHUNK_BYTES * 2 + 123)
    with session_scope() as session:
        assert store.put(session, document_id, "blob.bin", data) == len(data)
    chunks = list(store.iter_chunks(document_id, "blob.bin"))
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= CHUNK_BYTES
    with session_scope() as session:
        store.put(session, document_id, "blob.bin", b"replaced")
    assert store.get(document_id, "blob.bin") == b"replaced"
    with pytest.raises(ValueError, match="not a plain file name"), session_scope() as session:
        store.put(session, document_id, "../escape", b"x")
    with session_scope() as session:
        store.delete_document(session, document_id)
    with pytest.raises(BlobNotFoundError):
        store.get(document_id, "blob.bin")
