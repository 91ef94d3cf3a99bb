"""Microsoft 365 beyond the shared contract: MSAL connect, subscriptions, rotated tokens, moves.

MSAL and requests talk to the fake identity platform + Graph (tests.fakes.graph)
over TLS; Graph's validation requests and change notifications reach our webhook
through the Flask test client.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from config import Settings, queues
from core.crypto import decrypt_json
from core.db import session_scope
from core.models import Mailbox, MailboxPush
from tests.asgi_client import AsgiClient
from tests.conftest import ApiClient
from tests.fakes.graph import FakeGraph
from tests.integration.oauth_browsers import OWNER, Browser, owner_api, text_of
from tests.integration.provider_harness import GraphHarness, form_post_fields, queued, run_jobs
from tests.integration.test_provider_contract import inbound, make_seller, send_first_step, state_of
from worker.sync.engine import SYNC_JOB, sync_mailbox, sync_mailbox_job
from worker.sync.push import client_state, renew_push_job

SELLER = "rep@contoso.test"


@pytest.fixture
def graph_to_app(
    fake_graph: FakeGraph, asgi: AsgiClient, monkeypatch: pytest.MonkeyPatch
) -> FakeGraph:
    """Graph's validation requests and notifications reach the web process's ASGI app."""

    def transport(url: str, headers: dict[str, str], body: bytes) -> tuple[int, str]:
        parts = urlsplit(url)
        answer = asgi.post(f"{parts.path}?{parts.query}", body, headers=headers)
        return answer.status_code, answer.text

    fake_graph.transport = transport
    monkeypatch.setenv("GRAPH_NOTIFICATION_URL", "https://sightline.test/webhooks/graph")
    from config import get_settings

    get_settings.cache_clear()
    return fake_graph


def _credentials(mailbox_id: int) -> dict[str, Any]:
    with session_scope() as session:
        return decrypt_json(session.get_one(Mailbox, mailbox_id).credentials_encrypted)


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> ApiClient:
    return owner_api(app, client)


def test_connect_with_the_msal_flow_posts_the_code_back(
    env: Settings, app: Flask, api: ApiClient, fake_graph: FakeGraph
) -> None:
    fake_graph.add_user(SELLER)
    started = api.post("/api/v1/mailboxes/connect", {"kind": "graph", "login_hint": SELLER})
    assert started.status_code == 200
    browser = Browser(app, OWNER)
    url = browser.open_start(started.json["authorization_url"])
    query = parse_qs(urlsplit(url).query)
    assert query["response_mode"] == ["form_post"] and query["code_challenge_method"] == ["S256"]
    assert "offline_access" in query["scope"][0] and "Mail.Send" in query["scope"][0]
    fake_graph.store.consenting_user = SELLER
    page = requests.get(url, allow_redirects=False, timeout=10)
    fields = form_post_fields(page.text)
    assert set(fields) >= {"code", "state"}
    # Microsoft's POST arrives cross-site, without our cookies: it is parked and handed on.
    posted = browser.client.post("/connect/graph/callback", data=fields)
    assert posted.status_code == 303
    assert posted.headers["Location"].startswith("/connect/graph/callback?relay=")
    assert fields["code"] not in posted.headers["Location"]  # the code never goes in a URL
    confirm = browser.follow(posted)
    assert f"Connect {SELLER} (Microsoft 365) to team Team A?" in text_of(confirm)
    assert api.get("/api/v1/mailboxes").json["mailboxes"] == []
    assert browser.answer(confirm, "connect").status_code == 200
    [shown] = api.get("/api/v1/mailboxes").json["mailboxes"]
    assert (shown["email"], shown["kind"]) == (SELLER, "graph")
    credentials = _credentials(shown["id"])
    assert set(credentials) == {"token_cache", "home_account_id", "username"}
    assert queued(queues.SYNC, SYNC_JOB) == [(shown["id"],)]
    run_jobs(queues.SYNC)
    assert api.get("/api/v1/mailboxes").json["mailboxes"][0]["last_synced_at"] is not None


def test_subscription_handshake_notifications_and_client_state(
    env: Settings, graph_to_app: FakeGraph, asgi: AsgiClient
) -> None:
    harness = GraphHarness(graph_to_app)
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    assert renew_push_job(seller.mailbox_id)["status"] == "renewed"  # Graph validated our URL
    [subscription] = graph_to_app.subscriptions(seller.address)
    assert subscription.client_state == client_state(seller.mailbox_id)
    assert subscription.resource == "me/messages"

    harness.deliver(seller.address, inbound("boss@acme.test", seller.address, message_id))
    assert graph_to_app.wait_notified()
    assert [n.status for n in graph_to_app.notifications] == [202]
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
    run_jobs(queues.SYNC)
    assert state_of(enrollment)[0] == "replied"

    forged = dict(graph_to_app.notifications[0].payload)
    forged["value"] = [{**forged["value"][0], "clientState": "guessed"}]
    assert asgi.post("/webhooks/graph", json=forged).status_code == 403
    assert queued(queues.SYNC, SYNC_JOB) == []  # refused: wrong clientState
    removed = {
        "value": [
            {
                **graph_to_app.notifications[0].payload["value"][0],
                "lifecycleEvent": "subscriptionRemoved",
            }
        ]
    }
    assert asgi.post("/webhooks/graph", json=removed).status_code == 202
    assert queued(queues.DEFAULT, "worker.sync.push.renew_push_job") == [(seller.mailbox_id,)]
    echoed = asgi.post("/webhooks/graph?validationToken=abc%3Cdef")
    assert (echoed.status_code, echoed.text, echoed.mimetype) == (
        200,
        "abc<def",
        "text/plain",
    )


def test_renewal_extends_the_subscription_and_recreates_a_lost_one(
    env: Settings, graph_to_app: FakeGraph
) -> None:
    harness = GraphHarness(graph_to_app)
    seller = make_seller(harness)
    renew_push_job(seller.mailbox_id)
    [first] = graph_to_app.subscriptions(seller.address)
    first.expiration = datetime.now(UTC) + timedelta(hours=2)
    renew_push_job(seller.mailbox_id)
    [renewed] = graph_to_app.subscriptions(seller.address)
    assert renewed.id == first.id and renewed.expiration > datetime.now(UTC) + timedelta(days=6)
    graph_to_app.store.subscriptions.clear()  # Graph dropped it
    assert renew_push_job(seller.mailbox_id)["status"] == "renewed"
    [again] = graph_to_app.subscriptions(seller.address)
    with session_scope() as session:
        push = session.scalar(
            select(MailboxPush).where(MailboxPush.mailbox_id == seller.mailbox_id)
        )
        assert push is not None and push.external_id == again.id != first.id


def test_a_rotated_refresh_token_is_saved_before_it_is_needed_again(
    env: Settings, fake_graph: FakeGraph
) -> None:
    harness = GraphHarness(fake_graph)
    seller = make_seller(harness)
    sync_mailbox(seller.mailbox_id)
    for _ in range(3):  # each time: expired access token, refresh, rotation, save
        before = _credentials(seller.mailbox_id)["token_cache"]
        fake_graph.expire_access_tokens(seller.address)
        sync_mailbox(seller.mailbox_id)
        assert _credentials(seller.mailbox_id)["token_cache"] != before
    with session_scope() as session:
        assert session.get_one(Mailbox, seller.mailbox_id).status == "active"


def test_retry_after_is_honoured(env: Settings, fake_graph: FakeGraph) -> None:
    harness = GraphHarness(fake_graph)
    seller = make_seller(harness)
    sync_mailbox(seller.mailbox_id)
    fake_graph.throttle(seller.address, calls=1, retry_after=17)
    result = sync_mailbox_job(seller.mailbox_id)
    assert result == {"status": "throttled", "retry_in": 17.0}


def test_a_message_moved_after_listing_is_still_fetched(
    env: Settings, fake_graph: FakeGraph
) -> None:
    harness = GraphHarness(fake_graph)
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    reply_id = harness.deliver(
        seller.address, inbound("dana@acme.test", seller.address, message_id)
    )
    assert reply_id is not None
    from worker.sync.graph import GraphProvider

    provider = GraphProvider(seller.address, _credentials(seller.mailbox_id))
    [batch] = [
        b for b in provider.changes(None, datetime.now(UTC) - timedelta(days=1)) if b.messages
    ]
    moved = fake_graph.store.move(seller.address, reply_id, "inbox")  # e.g. a rule re-filed it
    assert moved.id != reply_id
    raw = provider.fetch(batch.messages[0].fetch_ref, 1_000_000)
    assert b"Sounds good" in raw
    assert state_of(enrollment)[0] == "active"
