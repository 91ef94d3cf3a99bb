"""The content library: rename, replace (links keep working, the new version shown) and delete.

A real PDF through the real pipeline, a prospect's link sent an hour ago, the
salesperson on the library pages (CSRF like every form) and the API. A replace
keeps the link and its token; the viewer shows the new pages once processed, a
viewer still open on the old file has its beacons refused, and the old visit keeps
its time per page marked with the version it read. A deleted document's link says
it was removed (410), never a 500. Another team's document id is a 404 everywhere.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from core.db import session_scope
from core.models import Document, DocumentVisit
from tests.conftest import create_user
from tests.fixtures.documents import samples
from tests.integration.test_documents_viewer import (
    PASSWORD,
    Shared,
    beacon,
    js,
    open_viewer,
    share,
    sign_in,
    started_ago,
)
from worker.documents.jobs import process_document_job

pytestmark = pytest.mark.integration

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def shared(app: Flask, client: FlaskClient) -> Shared:
    return share(app, client, pages=4)


def csrf(client: FlaskClient, path: str) -> str:
    found = CSRF.search(client.get(path).get_data(as_text=True))
    assert found is not None, path
    return found.group(1)


def document_row(document_id: int) -> Document:
    with session_scope() as session:
        row = session.get_one(Document, document_id)
        session.expunge(row)
        return row


def flashes(page: str) -> list[str]:
    return re.findall(r'<p class="flash flash-\w+" role="\w+">([^<]*)</p>', page)


def test_rename_changes_what_recipients_see(
    app: Flask, client: FlaskClient, shared: Shared
) -> None:
    sign_in(client)
    detail = f"/documents/{shared.document_id}"
    token = csrf(client, detail)
    forged = client.post(f"{detail}/rename", data={"name": "Forged.pdf"})
    assert forged.status_code in (400, 403)
    empty = client.post(f"{detail}/rename", data={"name": "  ", "csrf_token": token})
    assert empty.status_code == 303
    assert "Name: enter the title recipients see." in flashes(
        client.get(detail).get_data(as_text=True)
    )
    done = client.post(f"{detail}/rename", data={"name": "Pricing 2027.pdf", "csrf_token": token})
    assert done.status_code == 303
    assert document_row(shared.document_id).name == "Pricing 2027.pdf"
    reader = app.test_client()
    response, _ = open_viewer(reader, shared.token)
    assert response.status_code == 200
    assert "Pricing 2027.pdf" in response.get_data(as_text=True)
    # The API renames too, and says so in the document it answers.
    api = client.patch(
        f"/api/v1/documents/{shared.document_id}",
        json={"name": "Pricing final.pdf"},
        headers={"Authorization": f"Bearer {shared.api_token}"},
    )
    assert api.status_code == 200, js(api)
    assert (js(api)["name"], js(api)["version"]) == ("Pricing final.pdf", 1)


def test_replace_keeps_the_link_shows_the_new_version_and_keeps_old_visits_truthful(
    app: Flask, client: FlaskClient, shared: Shared
) -> None:
    # A prospect reads the 4-page first version: pages 1 and 3.
    reader = app.test_client()
    _, visit = open_viewer(reader, shared.token)
    started_ago(visit, 60)
    assert beacon(reader, shared.token, visit, 3, {"1": 4000, "3": 9000}).status_code == 204

    sign_in(client)
    detail = f"/documents/{shared.document_id}"
    new_file = samples.pdf_bytes(2, title="Pricing, revised")
    answer = client.post(
        f"{detail}/replace",
        data={"file": (io.BytesIO(new_file), "pricing-v2.pdf"), "csrf_token": csrf(client, detail)},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 303
    row = document_row(shared.document_id)
    assert (row.version, row.status, row.page_count) == (2, "queued", None)
    assert row.name == "pricing.pdf"  # the title stays; rename is its own action
    # While it is prepared the same link says so, then shows the new pages.
    waiting = reader.get(f"/d/{shared.token}")
    assert waiting.status_code == 200 and "is being prepared" in waiting.get_data(as_text=True)
    assert process_document_job(shared.document_id) == "ready"
    response, new_visit = open_viewer(reader, shared.token)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and new_visit
    assert len(re.findall(r'data-page="\d+"', page)) == 2
    assert re.search(r'/p1-800\.jpg\?v=2"', page), "page images carry the version"
    # The old viewer, still open on version 1, is told its pages are gone.
    stale = beacon(reader, shared.token, visit, 4, {"1": 4000, "3": 9000, "4": 2000})
    assert stale.status_code == 409
    # The old visit keeps its page times, marked with the version it read; the chart
    # counts version 2's pages only.
    with session_scope() as session:
        versions = {v.id: v.document_version for v in session.scalars(select(DocumentVisit)).all()}
    assert sorted(versions.values()) == [1, 2]
    recipient = client.get(f"/documents/{shared.document_id}/recipients/{shared.link_id}").get_data(
        as_text=True
    )
    assert "2 pages of version 1 (since replaced)" in recipient
    views = client.get(
        f"/api/v1/documents/{shared.document_id}/views",
        headers={"Authorization": f"Bearer {shared.api_token}"},
    )
    assert js(views)["seconds_per_page"] == [0.0, 0.0]
    # A file of a kind we do not take is refused as an upload would be; nothing changes.
    api = client.put(
        f"/api/v1/documents/{shared.document_id}/file",
        data={"file": (io.BytesIO(b"not a document at all"), "notes.txt")},
        headers={"Authorization": f"Bearer {shared.api_token}"},
        content_type="multipart/form-data",
    )
    assert api.status_code == 422 and js(api)["error"]["code"] == "unsupported_file"
    assert document_row(shared.document_id).version == 2


def test_replace_through_the_api_and_while_processing(
    app: Flask, client: FlaskClient, shared: Shared
) -> None:
    headers = {"Authorization": f"Bearer {shared.api_token}"}
    path = f"/api/v1/documents/{shared.document_id}/file"
    first = client.put(
        path,
        data={"file": (io.BytesIO(samples.pdf_bytes(3, title="Three")), "three.pdf")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert first.status_code == 202, js(first)
    assert (js(first)["version"], js(first)["status"]) == (2, "queued")
    busy = client.put(
        path,
        data={"file": (io.BytesIO(samples.pdf_bytes(3, title="Three")), "three.pdf")},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert busy.status_code == 409 and js(busy)["error"]["code"] == "document_busy"
    assert "still being prepared" in js(busy)["error"]["message"]
    assert process_document_job(shared.document_id) == "ready"
    assert js(client.get(path.removesuffix("/file"), headers=headers))["page_count"] == 3


def test_delete_asks_first_then_links_say_the_document_was_removed(
    app: Flask, client: FlaskClient, shared: Shared
) -> None:
    sign_in(client)
    detail = f"/documents/{shared.document_id}"
    confirm = client.get(f"{detail}/delete")
    text = confirm.get_data(as_text=True)
    assert confirm.status_code == 200
    assert "Delete pricing.pdf?" in text and "This document was removed" in text
    assert document_row(shared.document_id).deleted_at is None  # asking deletes nothing
    forged = client.post(f"{detail}/delete")
    assert forged.status_code in (400, 403)
    done = client.post(f"{detail}/delete", data={"csrf_token": csrf(client, f"{detail}/delete")})
    assert done.status_code == 303 and done.headers["Location"].endswith("/documents")
    library = client.get("/documents").get_data(as_text=True)
    assert f'data-document="{shared.document_id}"' not in library
    assert client.get(detail).status_code == 404
    reader = app.test_client()
    gone = reader.get(f"/d/{shared.token}")
    assert gone.status_code == 410
    assert "This document was removed" in gone.get_data(as_text=True)
    assert reader.get(f"/d/{shared.token}/p1-800.jpg").status_code in (404, 410)


def test_another_teams_document_is_not_found(
    app: Flask, client: FlaskClient, shared: Shared
) -> None:
    other_token = create_user(
        app, "rep@other.test", "Others", "--plan", "team", "--password", PASSWORD
    )
    sign_in(client, "rep@other.test")
    detail = f"/documents/{shared.document_id}"
    token = csrf(client, "/documents")
    tries: list[Any] = [
        client.post(f"{detail}/rename", data={"name": "Mine.pdf", "csrf_token": token}),
        client.post(
            f"{detail}/replace",
            data={"file": (io.BytesIO(samples.pdf_bytes(1)), "x.pdf"), "csrf_token": token},
            content_type="multipart/form-data",
        ),
        client.get(f"{detail}/delete"),
        client.post(f"{detail}/delete", data={"csrf_token": token}),
        client.put(
            f"/api/v1/documents/{shared.document_id}/file",
            data={"file": (io.BytesIO(samples.pdf_bytes(1)), "x.pdf")},
            headers={"Authorization": f"Bearer {other_token}"},
            content_type="multipart/form-data",
        ),
        client.patch(
            f"/api/v1/documents/{shared.document_id}",
            json={"name": "Mine.pdf"},
            headers={"Authorization": f"Bearer {other_token}"},
        ),
    ]
    assert [t.status_code for t in tries] == [404] * len(tries)
    row = document_row(shared.document_id)
    assert (row.name, row.version, row.deleted_at) == ("pricing.pdf", 1, None)
