"""Exchange on-premises beyond the shared contract: auth kinds, streaming, the listener, paging.

exchangelib talks EWS SOAP to the fake Exchange (tests.fakes.ews) over TLS,
with NTLM (pyspnego's acceptor on the fake's side), basic or an OAuth bearer.
"""

from __future__ import annotations

import threading
import time

import pytest

from config import Settings, queues
from tests.conftest import ApiClient
from tests.fakes.ews import FakeEws
from tests.integration.provider_harness import ExchangeHarness, forget_queued_syncs, queued
from tests.integration.test_provider_contract import (
    inbound,
    make_seller,
    newsletter,
    send_first_step,
    state_of,
)
from worker.listener import Listener
from worker.sync.base import ProviderError
from worker.sync.engine import SYNC_JOB, sync_mailbox, sync_mailbox_job
from worker.sync.exchange import ExchangeProvider

SELLER = "rep@fabrikam.test"


@pytest.mark.parametrize("auth", ["ntlm", "basic", "oauth"])
def test_each_sign_in_kind_works_and_a_wrong_secret_asks_for_a_reconnect(
    fake_ews: FakeEws, env: Settings, auth: str
) -> None:
    fake_ews.add_mailbox(SELLER)
    ExchangeProvider(SELLER, fake_ews.credentials(SELLER, auth)).verify()
    wrong = fake_ews.credentials(SELLER, auth)
    wrong["password" if auth != "oauth" else "access_token"] = "not-it"
    with pytest.raises(ProviderError) as refused:
        ExchangeProvider(SELLER, wrong).verify()
    assert refused.value.needs_reconnect


def test_connect_through_the_api_checks_the_credentials_first(
    env: Settings, api: ApiClient, fake_ews: FakeEws
) -> None:
    fake_ews.add_mailbox(SELLER)
    body = {**fake_ews.credentials(SELLER, "ntlm"), "email": SELLER}
    bad = api.post("/api/v1/mailboxes/exchange", {**body, "password": "wrong"})
    assert bad.status_code == 422 and "ews_url" in bad.json["error"]["fields"]
    missing = api.post(
        "/api/v1/mailboxes/exchange", {k: v for k, v in body.items() if k != "password"}
    )
    assert missing.status_code == 422 and "password" in missing.json["error"]["fields"]
    not_a_url = api.post("/api/v1/mailboxes/exchange", {**body, "ews_url": "exchange.local"})
    assert not_a_url.status_code == 422 and "ews_url" in not_a_url.json["error"]["fields"]
    created = api.post("/api/v1/mailboxes/exchange", body)
    assert created.status_code == 201, created.json
    assert (created.json["kind"], created.json["status"]) == ("exchange", "active")
    assert queued(queues.SYNC, SYNC_JOB) == [(created.json["id"],)]

    fake_ews.change_password(SELLER)
    sync_mailbox(created.json["id"])
    assert api.get(f"/api/v1/mailboxes/{created.json['id']}").json["status"] == "needs_reconnect"
    fresh = {**fake_ews.credentials(SELLER, "ntlm"), "email": SELLER}
    again = api.post(f"/api/v1/mailboxes/{created.json['id']}/reconnect", fresh)
    assert again.status_code == 200 and again.json["status"] == "active"


def test_server_busy_backs_off_for_the_time_exchange_asked(
    env: Settings, fake_ews: FakeEws
) -> None:
    seller = make_seller(ExchangeHarness(fake_ews))
    sync_mailbox(seller.mailbox_id)
    fake_ews.busy(seller.address, calls=1, back_off_ms=4_750)
    assert sync_mailbox_job(seller.mailbox_id) == {"status": "throttled", "retry_in": 4.8}


def test_more_than_512_changes_come_in_pages_and_nothing_is_lost(
    env: Settings, fake_ews: FakeEws
) -> None:
    harness = ExchangeHarness(fake_ews)
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    sync_mailbox(seller.mailbox_id)
    for n in range(600):
        harness.deliver(seller.address, newsletter(seller.address, n))
    harness.deliver(seller.address, inbound("dana@acme.test", seller.address, message_id))
    fake_ews.calls.clear()
    stats = sync_mailbox(seller.mailbox_id)
    assert (stats.listed, stats.fetched) == (601, 1)
    assert [c.label for c in fake_ews.calls.all()].count("SyncFolderItems") == 2
    assert state_of(enrollment)[0] == "replied"


def test_streaming_reports_new_mail_within_seconds_and_stops_on_request(
    env: Settings, fake_ews: FakeEws
) -> None:
    fake_ews.add_mailbox(SELLER)
    provider = ExchangeProvider(SELLER, fake_ews.credentials(SELLER, "ntlm"))
    stop = threading.Event()
    woke: list[float] = []
    watcher = threading.Thread(
        target=provider.watch, args=(stop, lambda: woke.append(time.monotonic()))
    )
    watcher.start()
    deadline = time.monotonic() + 5
    while not fake_ews.store.subscriptions and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # GetStreamingEvents is open
    delivered = time.monotonic()
    fake_ews.deliver(SELLER, newsletter(SELLER, 1))
    while not woke and time.monotonic() < delivered + 5:
        time.sleep(0.02)
    stop.set()
    watcher.join(timeout=5)
    assert woke and woke[0] - delivered < 2.0
    assert not watcher.is_alive()
    assert fake_ews.store.subscriptions == {}  # unsubscribed on the way out


def test_the_listener_holds_a_stream_per_exchange_mailbox(env: Settings, fake_ews: FakeEws) -> None:
    harness = ExchangeHarness(fake_ews)
    seller = make_seller(harness)
    sync_mailbox(seller.mailbox_id)
    listener = Listener(shard=0, shards=1)
    try:
        listener.refresh()
        assert list(listener.watches) == [seller.mailbox_id]
        deadline = time.monotonic() + 5
        while not fake_ews.store.subscriptions and time.monotonic() < deadline:
            time.sleep(0.02)
        forget_queued_syncs()  # the catch-up sync it asked for on start
        time.sleep(0.3)
        harness.deliver(seller.address, newsletter(seller.address, 1))
        deadline = time.monotonic() + 5
        while not queued(queues.SYNC, SYNC_JOB) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
    finally:
        listener.stopping.set()
        listener.stop_watches()
    threads = [w.on_thread for w in listener.watches.values()]
    assert threads and all(t is not None and not t.thread.is_alive() for t in threads)
