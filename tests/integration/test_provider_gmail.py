"""Gmail beyond the shared contract: OAuth connect, push, tokens saved back, quota, paging.

The real google-api-python-client, google-auth and google-auth-oauthlib talk
to the fake Gmail (tests.fakes.gmail) over TLS; Pub/Sub pushes are POSTed by
the fake's delivery thread to our webhook through the Flask test client.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
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
from core.models import Mailbox, MailboxPush, MailboxStatus, SentMessage
from tests.asgi_client import AsgiClient
from tests.conftest import ApiClient
from tests.fakes.gmail import FakeGmail
from tests.fakes.gmail.pubsub import oidc_token
from tests.integration.oauth_browsers import OWNER, Browser, Callback, owner_api, text_of
from tests.integration.provider_harness import GmailHarness, queued, run_jobs
from tests.integration.test_provider_contract import (
    inbound,
    mailbox_row,
    make_seller,
    newsletter,
    send_first_step,
    state_of,
)
from worker.sync.engine import SYNC_JOB, sync_mailbox, sync_mailbox_job
from worker.sync.push import renew_due, renew_push_job

SELLER = "rep@seller.test"


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> ApiClient:
    return owner_api(app, client)


@dataclass
class Connected:
    """How a connect ended: the last page's status and text, and the mailbox if one was saved."""

    status: int
    page: str
    mailbox: dict[str, Any] | None


def connect_through_api(
    api: ApiClient,
    fake: FakeGmail,
    address: str,
    path: str = "/api/v1/mailboxes/connect",
    body: dict[str, Any] | None = None,
) -> Connected:
    """Start with the API, open its link signed in, consent at the fake, press Connect."""
    fake.add_user(address)
    started = api.post(path, body if body is not None else {"kind": "gmail"})
    assert started.status_code == 200, started.json
    link = started.json["authorization_url"]
    assert link.startswith("http://localhost:5000/connect/start/")
    browser = Browser(api.client.application, OWNER)
    url = browser.open_start(link)
    query = parse_qs(urlsplit(url).query)
    assert query["access_type"] == ["offline"] and query["code_challenge_method"] == ["S256"]
    assert set(query["scope"][0].split()) == {
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://www.googleapis.com/auth/gmail.send",
    }
    fake.store.consenting_user = address
    consent = requests.get(url, allow_redirects=False, timeout=10)
    assert consent.status_code == 302
    assert urlsplit(consent.headers["Location"]).path == "/connect/gmail/callback"
    page = browser.come_back(Callback("GET", consent.headers["Location"], {}))
    if page.status_code != 200 or "/connect/confirm/" not in page.get_data(as_text=True):
        return Connected(page.status_code, text_of(page), None)
    assert f"{address} (Gmail) to team Team A?" in text_of(page)
    done = browser.answer(page, "connect")
    listed = {m["email"]: m for m in api.get("/api/v1/mailboxes").json["mailboxes"]}
    return Connected(done.status_code, text_of(done), listed.get(address))


def test_connect_stores_encrypted_tokens_then_syncs_and_watches(
    env: Settings, api: ApiClient, fake_gmail: FakeGmail, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = connect_through_api(api, fake_gmail, SELLER)
    assert answer.status == 200, answer.page
    assert answer.mailbox is not None
    assert answer.mailbox["kind"] == "gmail" and answer.mailbox["status"] == "active"
    mailbox_id = answer.mailbox["id"]
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        stored = mailbox.credentials_encrypted
    credentials = decrypt_json(stored)
    assert credentials["refresh_token"] in fake_gmail.store.refresh_tokens
    assert credentials["refresh_token"] not in stored  # encrypted at rest
    assert queued(queues.SYNC, SYNC_JOB) == [(mailbox_id,)]
    assert queued(queues.DEFAULT, "worker.sync.push.renew_push_job") == [(mailbox_id,)]

    run_jobs()
    assert fake_gmail.store.user(SELLER).watch is not None  # GMAIL_PUBSUB_TOPIC is set
    with session_scope() as session:
        push = session.scalar(select(MailboxPush).where(MailboxPush.mailbox_id == mailbox_id))
        assert push is not None and push.external_id == SELLER and push.last_error is None
        assert session.get_one(Mailbox, mailbox_id).last_synced_at is not None
    listed = api.get("/api/v1/mailboxes").json["mailboxes"]
    assert [(m["email"], m["kind"], m["status"]) for m in listed] == [(SELLER, "gmail", "active")]


def test_a_used_or_unknown_state_connects_nothing(
    env: Settings, app: Flask, api: ApiClient, fake_gmail: FakeGmail
) -> None:
    fake_gmail.add_user(SELLER)
    browser = Browser(app, OWNER)
    link = api.post("/api/v1/mailboxes/connect", {"kind": "gmail"}).json["authorization_url"]
    fake_gmail.store.consenting_user = SELLER
    back = requests.get(browser.open_start(link), allow_redirects=False, timeout=10)
    answer = Callback("GET", back.headers["Location"], {})
    page = browser.come_back(answer)
    done = browser.answer(page, "connect")
    assert done.status_code == 200 and f"{SELLER} (Gmail) is connected" in text_of(done)
    replay = browser.come_back(answer)
    assert replay.status_code == 400
    assert "expired or was already used" in text_of(replay)
    assert browser.get("/connect/gmail/callback?code=x&state=made-up").status_code == 400
    assert browser.get("/connect/yahoo/callback?code=x&state=made-up").status_code == 404
    declined = api.post("/api/v1/mailboxes/connect", {"kind": "gmail"}).json["authorization_url"]
    fake_gmail.store.consenting_user = None  # the user clicks "Cancel" at Google
    back = requests.get(browser.open_start(declined), allow_redirects=False, timeout=10)
    refused = browser.come_back(Callback("GET", back.headers["Location"], {}))
    assert refused.status_code == 400 and "access_denied" in text_of(refused)
    assert len(api.get("/api/v1/mailboxes").json["mailboxes"]) == 1


def test_bad_connect_requests_name_the_field(env: Settings, api: ApiClient) -> None:
    for body, field in (
        ({"kind": "yahoo"}, "kind"),
        ({"kind": "gmail", "login_hint": "nope"}, "login_hint"),
        ({"kind": "gmail", "return_to": "https://evil.test/"}, "return_to"),
        ({"kind": "gmail", "extra": 1}, "extra"),
    ):
        answer = api.post("/api/v1/mailboxes/connect", body)
        assert answer.status_code == 422, body
        assert field in answer.json["error"]["fields"]


def test_revoked_access_needs_reconnect_and_reconnecting_restores_it(
    env: Settings, api: ApiClient, fake_gmail: FakeGmail
) -> None:
    connected = connect_through_api(api, fake_gmail, SELLER).mailbox
    assert connected is not None
    mailbox_id = connected["id"]
    run_jobs()
    fake_gmail.revoke_user(SELLER)
    sync_mailbox(mailbox_id)
    shown = api.get(f"/api/v1/mailboxes/{mailbox_id}").json
    assert shown["status"] == "needs_reconnect"
    assert "reconnect" in shown["status_reason"]

    other = "someone.else@seller.test"
    wrong = connect_through_api(
        api, fake_gmail, other, f"/api/v1/mailboxes/{mailbox_id}/reconnect", {}
    )
    assert wrong.status == 409 and wrong.mailbox is None  # refused before any confirmation
    assert f"you signed in as {other}, but this mailbox is {SELLER}" in wrong.page
    assert not any(  # the other account's new grant was given back, not left lying around
        t.email == other and not t.revoked for t in fake_gmail.store.refresh_tokens.values()
    )
    right = connect_through_api(
        api, fake_gmail, SELLER, f"/api/v1/mailboxes/{mailbox_id}/reconnect", {}
    )
    assert right.status == 200 and right.mailbox is not None and right.mailbox["id"] == mailbox_id
    assert api.get(f"/api/v1/mailboxes/{mailbox_id}").json["status"] == "active"
    assert sync_mailbox(mailbox_id).listed == 0  # and it syncs again


def test_disconnect_stops_the_watch_revokes_and_wipes_tokens(
    env: Settings, api: ApiClient, fake_gmail: FakeGmail
) -> None:
    connected = connect_through_api(api, fake_gmail, SELLER).mailbox
    assert connected is not None
    mailbox_id = connected["id"]
    run_jobs()
    refresh = decrypt_json(_credentials(mailbox_id))["refresh_token"]
    answer = api.post(f"/api/v1/mailboxes/{mailbox_id}/disconnect", {})
    assert answer.status_code == 200 and answer.json["status"] == "disabled"
    run_jobs()
    assert fake_gmail.store.user(SELLER).watch is None
    assert fake_gmail.store.refresh_tokens[refresh].revoked
    assert decrypt_json(_credentials(mailbox_id)) == {}
    assert api.get(f"/api/v1/mailboxes/{mailbox_id}").json["status"] == "disabled"


def _credentials(mailbox_id: int) -> str:
    with session_scope() as session:
        return session.get_one(Mailbox, mailbox_id).credentials_encrypted


# -- push ------------------------------------------------------------------------------


@pytest.fixture
def pushed_to_app(fake_gmail: FakeGmail, asgi: AsgiClient) -> FakeGmail:
    """Pub/Sub pushes go to the web process's ASGI app in-process, with push authentication."""

    def deliver(url: str, headers: dict[str, str], body: bytes) -> int:
        path = urlsplit(url)
        return asgi.post(f"{path.path}?{path.query}", body, headers=headers).status_code

    fake_gmail.pubsub.deliver = deliver
    fake_gmail.subscribe_push(
        "http://localhost:5000/webhooks/gmail", audience="http://localhost:5000/webhooks/gmail"
    )
    return fake_gmail


def test_a_push_syncs_the_mailbox_and_the_reply_ends_the_sequence(
    env: Settings, pushed_to_app: FakeGmail
) -> None:
    harness = GmailHarness(pushed_to_app)
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    renew_push_job(seller.mailbox_id)
    pushed_to_app.pubsub.published.clear()

    harness.deliver(seller.address, inbound("boss@acme.test", seller.address, message_id))
    assert pushed_to_app.pubsub.wait_idle()
    assert [p.status for p in pushed_to_app.pubsub.published] == [204]
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
    run_jobs(queues.SYNC)
    assert state_of(enrollment)[0] == "replied"

    # Pub/Sub redelivers: the cursor is already past that historyId, nothing is queued.
    record = pushed_to_app.pubsub.published[0]
    envelope = pushed_to_app.pubsub.envelope(seller.address, record.history_id, "s")
    sub = next(iter(pushed_to_app.pubsub.subscriptions.values()))
    status = pushed_to_app.pubsub.deliver(
        sub.endpoint, pushed_to_app.pubsub.headers_for(sub), envelope
    )
    assert status == 204 and queued(queues.SYNC, SYNC_JOB) == []


def test_a_reply_a_filter_kept_out_of_the_inbox_is_pushed_and_ends_the_sequence(
    env: Settings, pushed_to_app: FakeGmail
) -> None:
    """ "Skip the Inbox, apply the label Customers": the watch covers every label."""
    harness = GmailHarness(pushed_to_app)
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    renew_push_job(seller.mailbox_id)
    pushed_to_app.pubsub.published.clear()

    harness.file_into(seller.address, inbound("dana@acme.test", seller.address, message_id), "")
    assert pushed_to_app.pubsub.wait_idle()
    assert [p.status for p in pushed_to_app.pubsub.published] == [204]
    run_jobs(queues.SYNC)
    assert state_of(enrollment)[0] == "replied"

    # Our own next send is filed under SENT only: no push for it.
    pushed_to_app.pubsub.published.clear()
    pushed_to_app.add_message(seller.address, inbound(seller.address, "dana@acme.test"), ["SENT"])
    assert pushed_to_app.pubsub.wait_idle()
    assert pushed_to_app.pubsub.published == []


def test_a_push_that_is_not_from_google_is_refused(
    env: Settings, pushed_to_app: FakeGmail, asgi: AsgiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = GmailHarness(pushed_to_app)
    seller = make_seller(harness)
    renew_push_job(seller.mailbox_id)
    body = pushed_to_app.pubsub.envelope(seller.address, 10**12, "projects/x/subscriptions/y")
    audience = "http://localhost:5000/webhooks/gmail"
    key = pushed_to_app.key
    for token in (
        oidc_token(key, "https://someone-else.test/push", "a@b.iam.gserviceaccount.com"),
        oidc_token(key, audience, "a@b.iam.gserviceaccount.com", issuer="https://evil.test"),
        oidc_token(key, audience, "a@b.iam.gserviceaccount.com", lifetime=-3600),
        "not.a.jwt",
    ):
        answer = asgi.post("/webhooks/gmail", body, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 403
    assert asgi.post("/webhooks/gmail", body).status_code == 403  # no token at all
    assert queued(queues.SYNC, SYNC_JOB) == []

    # The self-hosted alternative: a shared secret in the push URL.
    monkeypatch.setenv("GMAIL_PUSH_TOKEN", "x" * 32)
    from config import get_settings

    get_settings.cache_clear()
    assert asgi.post("/webhooks/gmail?token=" + "y" * 32, body).status_code == 403
    assert asgi.post("/webhooks/gmail?token=" + "x" * 32, body).status_code == 204
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
    garbage = asgi.post("/webhooks/gmail?token=" + "x" * 32, b"{}")
    assert garbage.status_code == 204  # acknowledged: redelivering it would not help


def test_watches_are_renewed_a_day_before_they_lapse(env: Settings, fake_gmail: FakeGmail) -> None:
    harness = GmailHarness(fake_gmail)
    seller = make_seller(harness)
    assert renew_due() == 1  # never watched
    run_jobs(queues.DEFAULT)
    assert renew_due() == 0  # seven days left
    with session_scope() as session:
        push = session.scalar(
            select(MailboxPush).where(MailboxPush.mailbox_id == seller.mailbox_id)
        )
        assert push is not None and push.expires_at is not None
        from datetime import timedelta

        push.expires_at = push.expires_at - timedelta(days=6, hours=12)
    assert renew_due() == 1
    run_jobs(queues.DEFAULT)
    assert renew_due() == 0


# -- tokens, quota, ids ----------------------------------------------------------------


def test_a_refreshed_token_is_saved_even_when_the_sync_then_fails(
    env: Settings, fake_gmail: FakeGmail
) -> None:
    harness = GmailHarness(fake_gmail)
    seller = make_seller(harness)
    sync_mailbox(seller.mailbox_id)
    before = decrypt_json(_credentials(seller.mailbox_id))
    fake_gmail.expire_access_tokens(seller.address)
    fake_gmail.rate_limit(seller.address, calls=1)  # the call after the refresh is throttled
    assert sync_mailbox_job(seller.mailbox_id)["status"] == "throttled"
    after = decrypt_json(_credentials(seller.mailbox_id))
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] == before["refresh_token"]
    assert after["access_token"] in fake_gmail.store.access_tokens


def test_quota_answer_says_how_long_to_wait(env: Settings, fake_gmail: FakeGmail) -> None:
    harness = GmailHarness(fake_gmail)
    seller = make_seller(harness)
    sync_mailbox(seller.mailbox_id)
    user = fake_gmail.store.user(seller.address)
    user.quota.append((fake_gmail.store.clock(), 15_000))  # the minute's units are used up
    result = sync_mailbox_job(seller.mailbox_id)
    assert result["status"] == "throttled"
    assert 50 <= float(str(result["retry_in"])) <= 61  # until the minute has passed


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, "rateLimitExceeded"), (403, "userRateLimitExceeded"), (403, "rateLimitExceeded")],
)
def test_every_rate_limit_answer_backs_off_and_none_asks_for_a_reconnect(
    env: Settings, fake_gmail: FakeGmail, status: int, reason: str
) -> None:
    harness = GmailHarness(fake_gmail)
    seller = make_seller(harness)
    sync_mailbox(seller.mailbox_id)
    fake_gmail.rate_limit(seller.address, calls=1, status=status, reason=reason)
    result = sync_mailbox_job(seller.mailbox_id)
    assert result["status"] == "throttled"
    assert 0 < float(str(result["retry_in"])) <= 3  # the time the answer named
    row = mailbox_row(seller.mailbox_id)
    assert row.status == MailboxStatus.ACTIVE and "throttled" in (row.status_reason or "")


def test_gmail_replacing_our_message_id_is_what_we_store_and_match(
    env: Settings, fake_gmail: FakeGmail
) -> None:
    fake_gmail.store.message_id_policy = "replace"
    harness = GmailHarness(fake_gmail)
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    assert message_id.endswith("@mail.gmail.com>")
    with session_scope() as session:
        sent = session.scalar(select(SentMessage))
        assert sent is not None and sent.thread_id and sent.provider_message_id
    sync_mailbox(seller.mailbox_id)
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, message_id))
    assert sync_mailbox(seller.mailbox_id).outcomes == {"recorded": 1}
    assert state_of(enrollment)[0] == "replied"


def test_many_changes_page_through_history_in_batches_of_fifty(
    env: Settings, fake_gmail: FakeGmail
) -> None:
    harness = GmailHarness(fake_gmail)
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    for n in range(520):
        harness.deliver(seller.address, newsletter(seller.address, n))
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, message_id))
    fake_gmail.calls.clear()
    units = fake_gmail.units_used(seller.address)
    stats = sync_mailbox(seller.mailbox_id)
    assert (stats.listed, stats.fetched) == (521, 1)
    assert state_of(enrollment)[0] == "replied"
    labels = [c.label for c in fake_gmail.calls.all()]
    assert labels.count("users.history.list") == 2  # 500 records, then the rest
    assert labels.count("batch") == 11  # ceil(521 / 50)
    # 2 history pages x 2 + 521 metadata gets x 5 + 1 raw fetch x 5 units
    assert fake_gmail.units_used(seller.address) - units == 2 * 2 + 521 * 5 + 5


def test_headers_only_unless_it_answers_us(env: Settings, fake_gmail: FakeGmail) -> None:
    harness = GmailHarness(fake_gmail)
    seller = make_seller(harness)
    sync_mailbox(seller.mailbox_id)
    msg = EmailMessage()
    msg["From"] = "news@shop.test"
    msg["To"] = seller.address
    msg["Subject"] = "=?utf-8?q?R=C3=A9union?="
    msg["Message-ID"] = make_msgid(domain="shop.test")
    msg.set_content("SECRET-BODY-TEXT " * 200)
    harness.deliver(seller.address, msg.as_bytes())
    fake_gmail.calls.clear()
    stats = sync_mailbox(seller.mailbox_id)
    assert (stats.listed, stats.fetched) == (1, 0)
    served = fake_gmail.calls.all()
    assert all("raw" not in c.query for c in served)
    assert fake_gmail.calls.bytes_out() < 4000
