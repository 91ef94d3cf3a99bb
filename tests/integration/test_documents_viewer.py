"""The viewer's server side: link states, visits, beacons, downloads, events, Salesforce.

Driven through Flask's test client against real PostgreSQL/SQLite and Redis;
the document is a real PDF processed by the real pipeline. (What a browser does
with the page is tested in tests/browser/test_viewer.py.)
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from core.crypto import encrypt_json
from core.db import session_scope
from core.models import (
    DocumentLink,
    DocumentPageView,
    DocumentVisit,
    Event,
    Mailbox,
    Plan,
    SalesforceEngagement,
    SendStatus,
    Sequence,
    SequenceStep,
    Team,
    User,
    utcnow,
)
from tests.conftest import create_user
from tests.fixtures.documents import samples
from worker.documents.jobs import process_document_job
from worker.documents.outgoing import ensure_link
from worker.sequences import claiming, enrolling

pytestmark = pytest.mark.integration


def js(response: Any) -> Any:
    """A response's JSON body (typed loosely: tests index into it)."""
    return response.get_json()


READER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
PASSWORD = "a long enough passphrase"


@dataclass
class Shared:
    token: str
    link_id: int
    document_id: int
    sent_id: int
    team_id: int
    original: bytes
    api_token: str


def share(
    app: Flask,
    client: FlaskClient,
    *,
    pages: int = 4,
    allow_download: bool = True,
    original: bytes | None = None,
    filename: str = "pricing.pdf",
) -> Shared:
    """A team-plan team, a processed document, and one prospect's link to it sent an hour ago.

    The document is a `pages`-page PDF unless `original` (named `filename`) is given.
    """
    api_token = create_user(
        app, "rep@seller.test", "Sellers", "--plan", "team", "--password", PASSWORD
    )
    original = original or samples.pdf_bytes(pages, title="Pricing")
    response = client.post(
        "/api/v1/documents",
        data={"file": (io.BytesIO(original), filename)},
        headers={"Authorization": f"Bearer {api_token}"},
        content_type="multipart/form-data",
    )
    document_id = int(js(response)["id"])
    assert process_document_job(document_id) == "ready"
    hour_ago = utcnow() - timedelta(hours=1)
    with session_scope() as session:
        team = session.scalars(select(Team)).one()
        user = session.scalars(select(User)).one()
        mailbox = Mailbox(
            team_id=team.id,
            user_id=user.id,
            kind="imap",
            email="rep@seller.test",
            credentials_encrypted=encrypt_json({}),
        )
        session.add(mailbox)
        session.flush()
        sequence = Sequence(team_id=team.id, mailbox_id=mailbox.id, name="Intro")
        sequence.steps = [
            SequenceStep(position=0, delay_seconds=0, subject="Pricing", body_html="<p>Hi</p>")
        ]
        session.add(sequence)
        session.flush()
        enrollment = enrolling.enroll(
            session, sequence=sequence, email="dana@prospect.test", name="Dana Scully", now=hour_ago
        )
        sent = claiming.claim_due_step(session, enrollment.id, utcnow())
        assert sent is not None
        sent.status = SendStatus.SENT
        sent.sent_at = hour_ago
        from core.models import Document

        document = session.get_one(Document, document_id)
        document.allow_download = allow_download
        link = ensure_link(session, document, sent, 0, tracked=True)
        from core.documents.tokens import link_token

        token = link_token(link.id, document_id, sent.id, 0)
        return Shared(token, link.id, document_id, sent.id, team.id, original, api_token)


@pytest.fixture
def shared(app: Flask, client: FlaskClient) -> Shared:
    return share(app, client)


def sign_in(client: FlaskClient, email: str = "rep@seller.test") -> None:
    page = client.get("/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    response = client.post(
        "/signin", data={"email": email, "password": PASSWORD, "csrf_token": csrf.group(1)}
    )
    assert response.status_code == 302, response.get_data(as_text=True)


def open_viewer(client: FlaskClient, token: str, **headers: str) -> tuple[Any, str]:
    response = client.get(f"/d/{token}", headers={"User-Agent": READER_UA, **headers})
    html = response.get_data(as_text=True)
    match = re.search(r'data-visit="([^"]+)"', html)
    return response, match.group(1) if match else ""


def beacon(
    client: FlaskClient,
    token: str,
    visit: str,
    page: int,
    ms: dict[str, int],
    *,
    final: bool = False,
) -> Any:
    return client.post(
        f"/d/{token}/beacon",
        data=json.dumps({"visit": visit, "page": page, "ms": ms, "final": final}),
        content_type="text/plain",
    )


def started_ago(visit_token_value: str, seconds: int) -> None:
    from core.documents.tokens import read_visit_token

    ref = read_visit_token(visit_token_value)
    assert ref is not None
    with session_scope() as session:
        session.execute(
            update(DocumentVisit)
            .where(DocumentVisit.id == ref.visit_id)
            .values(started_at=utcnow() - timedelta(seconds=seconds))
        )


def page_ms(visit_id: int | None = None) -> dict[int, int]:
    with session_scope() as session:
        query = select(DocumentPageView.page, DocumentPageView.ms)
        if visit_id is not None:
            query = query.where(DocumentPageView.visit_id == visit_id)
        return {int(p): int(ms) for p, ms in session.execute(query)}


def events() -> list[tuple[str, dict[str, Any]]]:
    with session_scope() as session:
        return [(e.kind, e.data) for e in session.scalars(select(Event).order_by(Event.id))]


def test_the_viewer_shows_the_first_page_at_once_and_the_rest_lazily(
    client: FlaskClient, shared: Shared
) -> None:
    response, visit = open_viewer(client, shared.token)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    images = re.findall(r"<img [^>]*>", html)
    assert len(images) == 4
    assert 'fetchpriority="high"' in images[0] and "loading" not in images[0]
    assert all('loading="lazy"' in tag for tag in images[1:])
    assert visit
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "Set-Cookie" not in response.headers
    image = client.get(f"/d/{shared.token}/p1-800.jpg")
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert image.data[:3] == b"\xff\xd8\xff"
    assert client.get(f"/d/{shared.token}/p9-800.jpg").status_code == 404
    assert client.get(f"/d/{shared.token}/p1-999.jpg").status_code == 404


def test_a_mangled_link_gets_a_clear_page(client: FlaskClient, shared: Shared) -> None:
    response = client.get(f"/d/{shared.token[:-3]}xyz")
    assert response.status_code == 404
    assert "This link is not valid" in response.get_data(as_text=True)
    assert client.get(f"/d/{shared.token[:-3]}xyz/p1-800.jpg").status_code == 404


def test_expired_and_revoked_links_get_a_clear_page(client: FlaskClient, shared: Shared) -> None:
    with session_scope() as session:
        session.execute(
            update(DocumentLink)
            .where(DocumentLink.id == shared.link_id)
            .values(expires_at=utcnow() - timedelta(days=1))
        )
    response = client.get(f"/d/{shared.token}")
    assert response.status_code == 410
    assert "expired on" in response.get_data(as_text=True)
    assert client.get(f"/d/{shared.token}/p1-800.jpg").status_code == 410
    with session_scope() as session:
        session.execute(
            update(DocumentLink)
            .where(DocumentLink.id == shared.link_id)
            .values(expires_at=None, revoked_at=utcnow())
        )
    response = client.get(f"/d/{shared.token}")
    assert response.status_code == 410
    assert "stopped sharing pricing.pdf" in response.get_data(as_text=True)


def test_page_time_is_recorded_idempotently_and_capped_by_the_visit_age(
    client: FlaskClient, shared: Shared
) -> None:
    _response, visit = open_viewer(client, shared.token)
    started_ago(visit, 30)
    assert beacon(client, shared.token, visit, 1, {"1": 4000}).status_code == 204
    assert beacon(client, shared.token, visit, 2, {"1": 6000, "2": 1500}).status_code == 204
    # The same report again, and an older one arriving late: nothing moves backwards.
    assert beacon(client, shared.token, visit, 2, {"1": 6000, "2": 1500}).status_code == 204
    assert beacon(client, shared.token, visit, 1, {"1": 4000}).status_code == 204
    assert page_ms() == {1: 6000, 2: 1500}
    # More time than the visit has existed is cut down to its age (+5 s of slack).
    assert beacon(client, shared.token, visit, 3, {"3": 3_600_000}).status_code == 204
    assert 30_000 <= page_ms()[3] <= 37_000
    with session_scope() as session:
        row = session.scalars(select(DocumentVisit)).one()
        assert (row.hit_class, row.pages_seen, row.current_page) == ("person", 3, 3)
        assert row.confirmed_at is not None


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        ({"page": 9, "ms": {}}, 422, "page: expected a page number from 1 to 4"),
        ({"page": 1, "ms": {"7": 10}}, 422, "'7' is not a page"),
        ({"page": 1, "ms": {"1": -5}}, 422, "whole number of milliseconds"),
        ({"page": 1, "ms": []}, 422, "ms: expected an object"),
    ],
)
def test_bad_beacons_get_a_clear_error_and_change_nothing(
    client: FlaskClient, shared: Shared, body: dict[str, Any], status: int, said: str
) -> None:
    _response, visit = open_viewer(client, shared.token)
    response = client.post(
        f"/d/{shared.token}/beacon",
        data=json.dumps({"visit": visit, **body}),
        content_type="text/plain",
    )
    assert response.status_code == status
    assert said in js(response)["error"]["message"]
    assert page_ms() == {}
    assert client.post(f"/d/{shared.token}/beacon", data="{not json").status_code == 400
    forged = client.post(
        f"/d/{shared.token}/beacon",
        data=json.dumps({"visit": visit[:-2] + "xx", "page": 1, "ms": {"1": 5}}),
    )
    assert forged.status_code == 422


def test_a_persons_visit_reaches_the_feed_and_salesforce_once(
    client: FlaskClient, shared: Shared
) -> None:
    _response, visit = open_viewer(client, shared.token)
    started_ago(visit, 20)
    beacon(client, shared.token, visit, 1, {"1": 1200})
    beacon(client, shared.token, visit, 1, {"1": 2200})
    beacon(client, shared.token, visit, 3, {"1": 2200, "3": 1500})
    kinds = [(kind, data["text"]) for kind, data in events()]
    assert kinds == [
        ("document_view", "opened pricing.pdf"),
        ("document_page", "now on page 3 of pricing.pdf"),
    ]
    with session_scope() as session:
        summary = session.scalars(select(SalesforceEngagement)).one()
        assert (summary.sent_message_id, summary.document_views) == (shared.sent_id, 1)
    sign_in(client)
    items = js(client.get("/feed/items"))["items"]
    # One item for the visit (its page events folded in), saying where the reader is.
    visit_items = [i for i in items if i["kind"].startswith("document_")]
    assert [i["kind"] for i in visit_items] == ["document_view"]
    assert visit_items[0]["prospect"]["email"] == "dana@prospect.test"
    assert visit_items[0]["text"].endswith("is reading pricing.pdf — page 3 of 4, under a minute")
    beacon(client, shared.token, visit, 3, {"1": 2200, "3": 2500}, final=True)
    [item] = [i for i in js(client.get("/feed/items"))["items"] if i["id"] == visit_items[0]["id"]]
    assert item["text"].endswith("read pricing.pdf — 2 of 4 pages, under a minute")
    assert item["label"] == "Read a document"


def test_the_senders_own_device_is_self_and_never_counted(
    client: FlaskClient, shared: Shared
) -> None:
    sign_in(client)
    response, visit = open_viewer(client, shared.token)
    assert "one of your team's own devices" in response.get_data(as_text=True)
    started_ago(visit, 20)
    beacon(client, shared.token, visit, 2, {"1": 3000, "2": 2000})
    with session_scope() as session:
        row = session.scalars(select(DocumentVisit)).one()
        assert (row.hit_class, row.reason) == ("self", "device cookie")
        assert session.scalars(select(SalesforceEngagement)).all() == []
    assert events() == []


@pytest.mark.parametrize(
    ("headers", "hit_class"),
    [
        ({"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}, "bot"),
        ({"Sec-Purpose": "prefetch"}, "scanner"),
    ],
)
def test_bots_and_prefetches_are_labelled_and_never_counted(
    client: FlaskClient, shared: Shared, headers: dict[str, str], hit_class: str
) -> None:
    _response, visit = open_viewer(client, shared.token, **headers)
    started_ago(visit, 20)
    beacon(client, shared.token, visit, 1, {"1": 3000})
    with session_scope() as session:
        assert session.scalars(select(DocumentVisit.hit_class)).one() == hit_class
    assert events() == []


def test_a_download_is_recorded_and_serves_the_original(
    client: FlaskClient, shared: Shared
) -> None:
    response, visit = open_viewer(client, shared.token)
    href = re.search(r'id="download" href="([^"]+)"', response.get_data(as_text=True))
    assert href is not None
    beacon(client, shared.token, visit, 1, {"1": 1000})
    download = client.get(href.group(1).replace("&amp;", "&"))
    assert download.status_code == 200
    assert download.data == shared.original
    assert download.headers["Content-Disposition"].startswith('attachment; filename="pricing.pdf"')
    with session_scope() as session:
        assert session.scalars(select(DocumentVisit.downloaded_at)).one() is not None
    assert [kind for kind, _data in events()] == ["document_view", "document_download"]


def test_downloads_can_be_withheld(app: Flask, client: FlaskClient) -> None:
    shared = share(app, client, allow_download=False)
    response, _visit = open_viewer(client, shared.token)
    assert 'id="download"' not in response.get_data(as_text=True)
    refused = client.get(f"/d/{shared.token}/download")
    assert refused.status_code == 403
    assert "has not made pricing.pdf available for download" in refused.get_data(as_text=True)


def test_a_team_that_left_the_team_plan_keeps_links_working_but_untracked(
    client: FlaskClient, shared: Shared
) -> None:
    _response, opened_before = open_viewer(client, shared.token)
    with session_scope() as session:
        session.execute(update(Team).values(plan=Plan.SOLO))
    response, visit = open_viewer(client, shared.token)
    assert response.status_code == 200 and visit == ""  # readable, and nothing recorded
    assert len(re.findall(r"<img ", response.get_data(as_text=True))) == 4
    # A page opened before the switch keeps reporting: it is answered, and not kept.
    started_ago(opened_before, 20)
    assert beacon(client, shared.token, opened_before, 1, {"1": 5000}).status_code == 204
    with client.get(f"/d/{shared.token}/download") as download:  # read and closed, as served
        assert download.status_code == 200 and download.get_data()
    assert page_ms() == {}
    assert events() == []
    with session_scope() as session:
        assert len(session.scalars(select(DocumentVisit)).all()) == 1  # the one from before


def test_the_library_explains_the_plan_to_a_solo_team(app: Flask, client: FlaskClient) -> None:
    create_user(app, "me@solo.test", "Solo", "--password", PASSWORD)
    sign_in(client, "me@solo.test")
    response = client.get("/documents")
    assert response.status_code == 403
    assert "Trackable attachments are part of the Team plan" in response.get_data(as_text=True)


def test_the_library_shows_seconds_per_page_per_document_and_recipient(
    client: FlaskClient, shared: Shared
) -> None:
    _response, visit = open_viewer(client, shared.token)
    started_ago(visit, 60)
    beacon(client, shared.token, visit, 2, {"1": 12000, "2": 30000, "4": 3000})
    sign_in(client)
    page = client.get(f"/documents/{shared.document_id}").get_data(as_text=True)
    bars = re.findall(r'data-page="(\d+)" data-seconds="([\d.]+)"', page)
    # The document's chart first, then the recipient's small one: the same numbers.
    assert bars[:4] == [("1", "12"), ("2", "30"), ("3", "0"), ("4", "3")]
    assert bars[4:8] == bars[:4]
    assert "Dana Scully" in page
    detail = client.get(f"/documents/{shared.document_id}/recipients/{shared.link_id}")
    assert detail.status_code == 200
    assert "p2 30 s" in detail.get_data(as_text=True)


def test_revoking_from_the_library_stops_the_link(client: FlaskClient, shared: Shared) -> None:
    sign_in(client)
    page = client.get(f"/documents/{shared.document_id}").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    response = client.post(
        f"/documents/links/{shared.link_id}",
        data={"csrf_token": csrf.group(1), "action": "revoke"},
    )
    assert response.status_code == 303
    assert client.get(f"/d/{shared.token}").status_code == 410
    no_csrf = client.post(f"/documents/links/{shared.link_id}", data={"action": "restore"})
    assert no_csrf.status_code == 400


def test_the_api_reports_views_per_page_and_recipient_and_manages_links(
    client: FlaskClient, shared: Shared
) -> None:
    headers = {"Authorization": f"Bearer {shared.api_token}"}
    _response, visit = open_viewer(client, shared.token)
    started_ago(visit, 60)
    beacon(client, shared.token, visit, 2, {"1": 12000, "2": 30000, "4": 3000})
    views = js(client.get(f"/api/v1/documents/{shared.document_id}/views", headers=headers))
    assert views["seconds_per_page"] == [12.0, 30.0, 0.0, 3.0]
    (recipient,) = views["recipients"]
    assert recipient["recipient"]["email"] == "dana@prospect.test"
    assert recipient["seconds_per_page"] == [12.0, 30.0, 0.0, 3.0]
    assert recipient["views"]["visits"] == 1 and recipient["state"] == "active"
    revoked = client.patch(
        f"/api/v1/document-links/{shared.link_id}", json={"revoked": True}, headers=headers
    )
    assert revoked.status_code == 200 and js(revoked)["state"] == "revoked"
    assert client.get(f"/d/{shared.token}").status_code == 410
    naive = client.patch(
        f"/api/v1/document-links/{shared.link_id}",
        json={"expires_at": "2030-01-01T00:00:00"},
        headers=headers,
    )
    assert naive.status_code == 422 and "time zone" in js(naive)["error"]["message"]
    in_use = client.delete(f"/api/v1/documents/{shared.document_id}", headers=headers)
    assert in_use.status_code == 204  # on no step: removed; its links now say so
    assert client.get(f"/d/{shared.token}").status_code == 410
