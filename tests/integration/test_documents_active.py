"""PDFs with JavaScript, actions or embedded files: shown as pages, downloaded only without them.

Real pipeline, real sandbox, real viewer (Flask's test client) on PostgreSQL
and SQLite. A PDF carrying every kind of active content the sandbox knows
(tests/fixtures/documents/active.py, its objects in compressed object streams)
used to be refused outright; now it is shown, the document's page and the API
say in words what was removed, and the download is a copy that, opened afresh,
holds none of it. A PDF that merely mentions such names in its text is offered
as uploaded; one whose active content cannot be cut out is shown but not
offered for download, with the reason; an Office file is offered as the PDF
shown. Documents made before any of this are checked by the recovery tick.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pymupdf
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from core.db import session_scope
from core.documents.storage import get_blob_store
from core.models import Document, Sequence
from tests.fixtures.documents import active, samples
from tests.integration.test_documents_viewer import READER_UA, share, sign_in
from worker.documents.jobs import check_document_job, recover_documents
from worker.documents.pdf_active import find_active_content

pytestmark = pytest.mark.integration
# What the database changes is checked on both (the JSON column, the NULL check of
# rows from before); the rest once.
postgres_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

EVERYTHING = (
    "This PDF contained JavaScript, an action that starts a program, a form that sends its "
    "contents to a web address, an action that imports data from another file, links that "
    "open other files, an action that runs when it is opened, actions that run by themselves "
    "(when a page or field is used), an embedded file, a file attachment, embedded media "
    "(video, sound, Flash or 3D) and an XFA form; they were removed from the download copy."
)


def api_get(client: FlaskClient, token: str, path: str) -> Any:
    return client.get(path, headers={"Authorization": f"Bearer {token}"}).get_json()


def download_of(client: FlaskClient, token: str) -> Any:
    page = client.get(f"/d/{token}", headers={"User-Agent": READER_UA})
    assert page.status_code == 200
    href = re.search(r'id="download" href="([^"]+)"', page.get_data(as_text=True))
    assert href is not None, "no Download button on the viewer page"
    return client.get(href.group(1).replace("&amp;", "&"), headers={"User-Agent": READER_UA})


def test_a_pdf_with_active_content_is_shown_and_its_download_holds_none_of_it(
    app: Flask, client: FlaskClient
) -> None:
    original = active.everything(objstm=True)
    shared = share(app, client, original=original, filename="form.pdf")
    body = api_get(client, shared.api_token, f"/api/v1/documents/{shared.document_id}")
    assert (body["status"], body["page_count"]) == ("ready", 2)
    assert body["active_content"] == [
        "javascript",
        "launch",
        "submit_form",
        "import_data",
        "remote_goto",
        "open_action",
        "additional_actions",
        "embedded_file",
        "file_attachment",
        "rich_media",
        "xfa",
    ]
    assert body["download_note"] == EVERYTHING
    assert body["download"]["file_name"] == "form.pdf"
    assert "Active Page 2" in body["pages"][1]["text"]  # shown like any other PDF

    response = download_of(client, shared.token)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="form.pdf"')
    assert response.data != original
    assert int(response.headers["Content-Length"]) == len(response.data)
    with pymupdf.open(stream=response.data, filetype="pdf") as copy:
        assert find_active_content(copy) == []
        assert copy.page_count == 2
        assert copy.embfile_count() == 0
        assert copy.xref_get_key(copy.pdf_catalog(), "OpenAction")[0] == "null"
        annotations = {a.type[1] for page in copy.pages() for a in page.annots()}
        assert not annotations & {"FileAttachment", "RichMedia"}, annotations
        assert "Active Page 1" in copy[0].get_text()

    sign_in(client)
    detail = client.get(f"/documents/{shared.document_id}").get_data(as_text=True)
    assert EVERYTHING in detail


@postgres_only
def test_a_pdf_that_only_mentions_scripts_is_offered_as_uploaded(
    app: Flask, client: FlaskClient
) -> None:
    original = active.decoy()
    shared = share(app, client, original=original)
    body = api_get(client, shared.api_token, f"/api/v1/documents/{shared.document_id}")
    assert (body["active_content"], body["download_note"]) == ([], None)
    response = download_of(client, shared.token)
    assert response.data == original


@postgres_only
def test_when_active_content_cannot_be_cut_out_downloads_are_off_with_the_reason(
    app: Flask, client: FlaskClient
) -> None:
    shared = share(app, client, original=active.hidden_embedded_file())
    body = api_get(client, shared.api_token, f"/api/v1/documents/{shared.document_id}")
    assert body["status"] == "ready"
    assert body["active_content"] == ["embedded_file"]
    assert body["download"] is None
    assert body["download_note"] == (
        "This PDF contains an embedded file, which could not be removed, so it is not offered "
        "for download. Recipients can still read it online."
    )
    page = client.get(f"/d/{shared.token}", headers={"User-Agent": READER_UA})
    assert page.status_code == 200 and 'id="download"' not in page.get_data(as_text=True)
    refused = client.get(f"/d/{shared.token}/download", headers={"User-Agent": READER_UA})
    assert refused.status_code == 403
    assert "could not be removed" in refused.get_data(as_text=True)

    # Nor can it go out as a plain attachment.
    with session_scope() as session:
        sequence_id = session.scalars(select(Sequence.id)).one()
    answer = client.put(
        f"/api/v1/sequences/{sequence_id}/steps/0/documents",
        json={"documents": [{"document_id": shared.document_id, "tracked": False}]},
        headers={"Authorization": f"Bearer {shared.api_token}"},
    )
    assert answer.status_code == 422
    assert "send it as a tracked link" in answer.get_json()["error"]["message"]


@postgres_only
def test_an_office_file_is_offered_as_the_pdf_shown(
    app: Flask, client: FlaskClient, tmp_path: Any
) -> None:
    deck = samples.office_bytes("pptx", 2, tmp_path / "deck")
    shared = share(app, client, original=deck, filename="Q3 deck.pptx")
    body = api_get(client, shared.api_token, f"/api/v1/documents/{shared.document_id}")
    assert body["download"]["file_name"] == "Q3 deck.pdf"
    response = download_of(client, shared.token)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/pdf"
    assert "filename*=UTF-8''Q3%20deck.pdf" in response.headers["Content-Disposition"]
    assert response.data == get_blob_store().get(shared.document_id, "document.pdf")
    assert response.data.startswith(b"%PDF-") and response.data != deck


def test_documents_shown_before_are_checked_and_then_downloadable(
    app: Flask, client: FlaskClient
) -> None:
    shared = share(app, client, original=active.with_feature("embedded_file"))
    # As a row from before this check existed: nothing recorded, no copy.
    with session_scope() as session:
        session.execute(
            update(Document)
            .where(Document.id == shared.document_id)
            .values(active_content=None, download_blob=None, download_bytes=None)
        )
    waiting = client.get(f"/d/{shared.token}/download", headers={"User-Agent": READER_UA})
    assert waiting.status_code == 503
    assert "being prepared" in waiting.get_data(as_text=True)

    recover_documents()  # the tick queues the check...
    assert check_document_job(shared.document_id) == "checked"  # ...which the worker runs
    assert check_document_job(shared.document_id) == "skipped"  # and only once
    body = api_get(client, shared.api_token, f"/api/v1/documents/{shared.document_id}")
    assert body["active_content"] == ["embedded_file"]
    response = download_of(client, shared.token)
    with pymupdf.open(stream=response.data, filetype="pdf") as copy:
        assert find_active_content(copy) == [] and copy.embfile_count() == 0


@postgres_only
def test_the_api_lists_the_download_of_a_clean_pdf_as_the_upload(
    app: Flask, client: FlaskClient
) -> None:
    shared = share(app, client)
    listed = api_get(client, shared.api_token, "/api/v1/documents")["documents"][0]
    assert listed["active_content"] == []
    assert listed["download"] == {
        "file_name": "pricing.pdf",
        "content_type": "application/pdf",
        "size_bytes": len(shared.original),
    }
    assert listed["download_note"] is None
    uploaded = client.post(
        "/api/v1/documents",
        data={"file": (io.BytesIO(samples.pdf_bytes(1)), "queued.pdf")},
        headers={"Authorization": f"Bearer {shared.api_token}"},
        content_type="multipart/form-data",
    ).get_json()
    assert (uploaded["download"], uploaded["download_note"]) == (None, None)
