"""A team's tracking host, from the sent email to the web edge, on real parts.

Two teams. Acme verified ``track.acme-sales.com`` (a CNAME to the operator's
host, answered by `tests.security.tracking_dns.Zone` through the resolver's
API); Beta set ``links.beta-sales.com`` but has not verified it. A real step of
each goes through the real SMTP server into Dovecot: Acme's pixel, click and
document links are on its host, Beta's on the operator's. Then the ASGI front
door (in-process, real Redis, real database) is asked with each Host header:
Acme's host answers Acme's pixel, click and document viewer and records the
hits; it refuses Beta's tokens, and answers 404 for everything that is the app
(sign-in, API, pages, health, the feed stream). The operator's host behaves as
before, and `/tls/allowed` tells a proxy which names may get a certificate.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from config import Settings, get_settings
from core import redis as core_redis
from core.tracking.tokens import read_click_token, read_open_token
from tests.asgi_client import http_scope
from tests.conftest import create_user
from tests.fixtures.documents import samples
from tests.integration.test_documents_send import ANY_TIME, js, server
from tests.integration.test_tracking_edge import Reply, entries
from tests.security.tracking_dns import OPERATOR, OPERATOR_URL, Zone, use_zone
from tests.services.dovecot import DovecotServer
from web.tracking import hosts
from web.tracking.app import PIXEL, SightlineAsgi
from worker.documents.jobs import process_document_job
from worker.sequences.jobs import send_due_step

pytestmark = pytest.mark.integration

ACME_HOST = "track.acme-sales.com"
BETA_HOST = "links.beta-sales.com"
DESTINATION = "https://acme-sales.com/pricing?plan=team"


async def call(app: SightlineAsgi, method: str, url: str, host: str) -> Reply:
    """A request as uvicorn hands it over: `url` is a path (and query), `host` the Host header."""
    headers = [("host", host), ("user-agent", "Mozilla/5.0 Chrome/131")]
    scope = http_scope(method, url, headers, client="93.184.215.20")
    messages: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(dict(message))

    await app(scope, receive, send)
    return Reply(messages)


def send_step(
    client: FlaskClient,
    token: str,
    dovecot: DovecotServer,
    smtp_server: Any,
    sender: str,
    prospect: str,
    document: bool,
) -> str:
    """One tracked step (a link, and a tracked document if asked) delivered: its HTML."""
    headers = {"Authorization": f"Bearer {token}"}

    def post(path: str, body: Any, method: str = "post") -> Any:
        response = getattr(client, method)(path, json=body, headers=headers)
        assert response.status_code in (200, 201), response.json
        return js(response)

    mailbox = post(
        "/api/v1/mailboxes",
        {
            "kind": "imap",
            "email": sender,
            "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
            "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
        },
    )
    subject = f"Pricing from {sender}"
    sequence = post(
        "/api/v1/sequences",
        {
            "name": "Intro",
            "mailbox_id": mailbox["id"],
            "send_window": ANY_TIME,
            "steps": [
                {
                    "delay_seconds": 0,
                    "subject": subject,
                    "body_html": f'<p>See <a href="{DESTINATION}">our plans</a>.</p>',
                }
            ],
        },
    )
    if document:
        uploaded = client.post(
            "/api/v1/documents",
            data={"file": (io.BytesIO(samples.pdf_bytes(1, title="Plans")), "plans.pdf")},
            headers=headers,
            content_type="multipart/form-data",
        )
        document_id = js(uploaded)["id"]
        assert process_document_job(document_id) == "ready"
        post(
            f"/api/v1/sequences/{sequence['id']}/steps/0/documents",
            {"documents": [{"document_id": document_id, "tracked": True}]},
            method="put",
        )
    enrollment = post(
        "/api/v1/enrollments", {"sequence_id": sequence["id"], "email": prospect, "name": "Dana"}
    )
    assert send_due_step(enrollment["id"], 0) == "sent"
    message = dovecot.wait_for_message(prospect, lambda m: m["Subject"] == subject)
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def urls(html: str) -> dict[str, str]:
    found = {
        "pixel": re.search(r'<img src="([^"]+/o/[^"]+\.gif)"', html),
        "click": re.search(r'<a href="([^"]+/c/[^"]+)"', html),
        "document": re.search(r'<a href="([^"]+/d/[^"]+)" data-sightline-untracked', html),
    }
    return {kind: match.group(1) for kind, match in found.items() if match}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_verified_team_host_carries_its_links_and_answers_only_them(
    env: Settings,
    monkeypatch: pytest.MonkeyPatch,
    app: Flask,
    client: FlaskClient,
    dovecot: DovecotServer,
    smtp_server: Any,
    unique_address: Callable[..., str],
) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", OPERATOR_URL)
    get_settings.cache_clear()
    zone: Zone = use_zone(monkeypatch)
    acme = create_user(app, "rep@acme.test", "Acme", "--plan", "team")
    beta = create_user(app, "rep@beta.test", "Beta")
    for token, host, verify in ((acme, ACME_HOST, True), (beta, BETA_HOST, False)):
        auth = {"Authorization": f"Bearer {token}"}
        stored = js(client.put("/api/v1/team/tracking-host", json={"host": host}, headers=auth))
        assert stored["status"] == "pending"
        if verify:
            answer = js(client.post("/api/v1/team/tracking-host/verify", headers=auth))
            assert answer["status"] == "verified", answer

    acme_html = send_step(
        client, acme, dovecot, smtp_server, unique_address(prefix="rep"), unique_address(), True
    )
    beta_html = send_step(
        client, beta, dovecot, smtp_server, unique_address(prefix="rep"), unique_address(), False
    )
    acme_urls, beta_urls = urls(acme_html), urls(beta_html)
    assert set(acme_urls) == {"pixel", "click", "document"}
    for url in acme_urls.values():
        assert url.startswith(f"http://{ACME_HOST}/"), url
    assert set(beta_urls) == {"pixel", "click"}
    for url in beta_urls.values():  # a host set but not verified is never used
        assert url.startswith(f"{OPERATOR_URL}/"), url
    acme_pixel = read_open_token(acme_urls["pixel"].rsplit("/", 1)[1].removesuffix(".gif"))
    beta_pixel = read_open_token(beta_urls["pixel"].rsplit("/", 1)[1].removesuffix(".gif"))
    acme_click = read_click_token(acme_urls["click"].rsplit("/", 1)[1])
    assert acme_pixel and beta_pixel and acme_click and acme_click.url == DESTINATION
    assert acme_pixel.team_id != beta_pixel.team_id

    def path(url: str) -> str:
        return urlsplit(url).path

    # Beta verifies now: a second team host for the edge, and its own tokens are good there.
    zone.records[BETA_HOST] = OPERATOR
    auth = {"Authorization": f"Bearer {beta}"}
    assert js(client.post("/api/v1/team/tracking-host/verify", headers=auth))["status"] == (
        "verified"
    )
    stream: redis.Redis = core_redis.get_redis()
    asgi = SightlineAsgi()
    asgi.start()
    answers: dict[str, Reply] = {}

    async def scenario() -> None:
        try:
            for name, method, url, host in (
                ("acme pixel", "GET", path(acme_urls["pixel"]), ACME_HOST),
                ("acme click", "GET", path(acme_urls["click"]), f"{ACME_HOST}:443"),
                ("acme document", "GET", path(acme_urls["document"]), ACME_HOST),
                ("viewer css", "GET", "/static/documents/viewer.css", ACME_HOST),
                ("beta pixel on acme", "GET", path(beta_urls["pixel"]), ACME_HOST),
                ("beta click on acme", "GET", path(beta_urls["click"]), ACME_HOST),
                ("acme document on beta", "GET", path(acme_urls["document"]), BETA_HOST),
                ("beta pixel on beta", "GET", path(beta_urls["pixel"]), BETA_HOST),
                ("beta pixel on operator", "GET", path(beta_urls["pixel"]), OPERATOR),
                ("signin", "GET", "/signin", ACME_HOST),
                ("signin post", "POST", "/signin", ACME_HOST),
                ("root", "GET", "/", ACME_HOST),
                ("api", "GET", "/api/v1/team", ACME_HOST),
                ("openapi", "GET", "/api/v1/openapi.json", ACME_HOST),
                ("health", "GET", "/healthz", ACME_HOST),
                ("feed stream", "GET", "/feed/stream", ACME_HOST),
                ("app css", "GET", "/static/app.css", ACME_HOST),
                ("tls on team host", "GET", f"/tls/allowed?domain={ACME_HOST}", ACME_HOST),
                ("operator signin", "GET", "/signin", OPERATOR),
                ("tls acme", "GET", f"/tls/allowed?domain={ACME_HOST}", OPERATOR),
                ("tls operator", "GET", f"/tls/allowed?domain={OPERATOR}", "127.0.0.1:5000"),
                ("tls unknown", "GET", "/tls/allowed?domain=mail.acme-sales.com", OPERATOR),
                ("tls empty", "GET", "/tls/allowed", OPERATOR),
            ):
                answers[name] = await call(asgi, method, url, host)
        finally:
            await asgi.stop()

    asyncio.run(scenario())
    assert (answers["acme pixel"].status, answers["acme pixel"].body) == (200, PIXEL)
    assert answers["acme click"].status == 302
    assert answers["acme click"].headers["location"] == DESTINATION
    assert answers["acme document"].status == 200
    assert "plans.pdf" in answers["acme document"].body.decode()
    assert answers["viewer css"].status == 200
    # Another team's tokens on this host: the GIF and nothing kept; the bad-link pages.
    assert (answers["beta pixel on acme"].status, answers["beta pixel on acme"].body) == (
        200,
        PIXEL,
    )
    assert answers["beta click on acme"].status == 404
    assert answers["acme document on beta"].status == 404
    assert "Link not valid" in answers["acme document on beta"].body.decode()
    for name in (
        "signin",
        "signin post",
        "root",
        "api",
        "openapi",
        "health",
        "feed stream",
        "app css",
        "tls on team host",
    ):
        reply = answers[name]
        assert reply.status == 404, name
        assert b"This address only serves links in emails." in reply.body, name
        assert "set-cookie" not in reply.headers, name
    assert answers["operator signin"].status == 200
    assert b"password" in answers["operator signin"].body
    assert [answers[f"tls {n}"].status for n in ("acme", "operator", "unknown", "empty")] == [
        200,
        200,
        404,
        404,
    ]
    # Recorded: Acme's open and click on its host, Beta's open on its own host and on
    # the operator's (emails sent before a host was verified keep counting); nothing else.
    recorded = [(e["k"], e["t"], e["s"]) for e in entries(stream)]
    assert recorded == [
        ("o", str(acme_pixel.team_id), str(acme_pixel.sent_message_id)),
        ("c", str(acme_pixel.team_id), str(acme_pixel.sent_message_id)),
        ("o", str(beta_pixel.team_id), str(beta_pixel.sent_message_id)),
        ("o", str(beta_pixel.team_id), str(beta_pixel.sent_message_id)),
    ]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_running_edge_learns_a_new_team_host_without_a_restart(
    env: Settings, monkeypatch: pytest.MonkeyPatch, app: Flask, client: FlaskClient
) -> None:
    monkeypatch.setenv("PUBLIC_BASE_URL", OPERATOR_URL)
    get_settings.cache_clear()
    use_zone(monkeypatch)
    # Re-read at once on a miss (2 s in production), so the test does not wait.
    monkeypatch.setattr(hosts, "MISS_REFRESH_SECONDS", 0.0)
    auth = {"Authorization": f"Bearer {create_user(app, 'rep@acme.test', 'Acme')}"}
    asgi = SightlineAsgi()
    asgi.start()
    statuses: list[int] = []

    async def scenario() -> None:
        try:
            statuses.append((await call(asgi, "GET", "/signin", ACME_HOST)).status)
            # Claimed (not even verified yet): from now on never the app.
            client.put("/api/v1/team/tracking-host", json={"host": ACME_HOST}, headers=auth)
            statuses.append((await call(asgi, "GET", "/signin", ACME_HOST)).status)
        finally:
            await asgi.stop()

    asyncio.run(scenario())
    assert statuses == [200, 404]
