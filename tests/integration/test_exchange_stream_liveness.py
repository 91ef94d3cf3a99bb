"""An Exchange stream is live while Exchange writes to it, and trusted only then.

exchangelib against the fake Exchange (tests.fakes.ews), the real listener
(`worker.listener.Listener`) holding the stream, syncs run by RQ's own worker in
this process:

- an idle stream stays live on the server's keep-alives alone, in Exchange's
  shape (ConnectionStatus OK, nothing else) and gromox's (OK + a StatusEvent);
- a prompt stream, once measured, spares the syncs of a burst of follow-up
  steps once a sync has listed the folders after they fell due;
- a stream that stalls (held open, nothing written: a hung server or TCP
  connection) stops being live within two keep-alive intervals, the follow-up
  waits for a sync, and a reply delivered meanwhile halts it.

The keep-alive interval is 45 s in production; here the fake writes every
0.2 s and SIGHTLINE_EXCHANGE_KEEPALIVE_SECONDS is 1 (a silent stream is dead
after 2 s), so the test takes seconds. PostgreSQL only: the database is not
what differs here.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import pytest

from config import Settings, get_settings, queues
from tests.fakes.ews import FakeEws
from tests.integration.provider_harness import ExchangeHarness, queued, run_jobs
from tests.integration.test_idle_latency import (
    fall_due_after_last_sync,
    listed_for_the_step_then_window_passes,
    push_state,
    pushed,
    wait_for,
)
from tests.integration.test_provider_contract import (
    Seller,
    inbound,
    make_seller,
    newsletter,
    send_first_step,
    sent_count,
    state_of,
)
from worker.listener import Listener
from worker.sequences.freshness import ready_to_send
from worker.sequences.jobs import send_due_step
from worker.sync import push_latency
from worker.sync.engine import SYNC_JOB
from worker.sync.exchange import ExchangeProvider

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

KEEPALIVE = 0.2  # how often the fake writes to an idle stream
SILENCE = 2.0  # twice SIGHTLINE_EXCHANGE_KEEPALIVE_SECONDS: a stream this quiet is dead


@pytest.fixture
def ews(fake_ews: FakeEws, env: Settings, monkeypatch: pytest.MonkeyPatch) -> FakeEws:
    fake_ews.keepalive(KEEPALIVE)
    monkeypatch.setenv("SIGHTLINE_EXCHANGE_KEEPALIVE_SECONDS", str(int(SILENCE / 2)))
    get_settings.cache_clear()
    return fake_ews


@pytest.fixture
def listener(ews: FakeEws) -> Iterator[Listener]:
    running = Listener(shard=0, shards=1)
    yield running
    running.stop_watches()


def prompt_exchange_seller(ews: FakeEws, listener: Listener) -> tuple[Seller, int, str]:
    """A seller whose stream the listener holds, measured prompt, and step 1 sent to Dana.

    Returns (seller, enrollment id, step 1's Message-ID).
    """
    harness = ExchangeHarness(ews)
    seller = make_seller(harness)
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    listener.refresh()
    wait_for("the stream's first frame", lambda: live(seller.mailbox_id), 10)
    assert run_jobs(queues.SYNC) == 1  # the catch-up sync every (re)connection asks for
    for n in range(push_latency.MEASUREMENTS_NEEDED):
        harness.deliver(seller.address, newsletter(seller.address, n))
        wait_for("the push's sync", lambda: bool(queued(queues.SYNC, SYNC_JOB)), 5)
        assert pushed(seller.mailbox_id)
        assert run_jobs(queues.SYNC) == 1
    delays, prompt = push_state(seller.mailbox_id)
    assert delays is not None and len(delays) == push_latency.MEASUREMENTS_NEEDED
    assert max(delays) <= push_latency.PROMPT_SECONDS and prompt is True
    return seller, enrollment, message_id


def live(mailbox_id: int) -> bool:
    return push_latency.live_since(mailbox_id) is not None


def stream_stoppers() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "ews-stream-stop")


@pytest.mark.parametrize("style", ["exchange", "gromox"])
def test_an_idle_stream_is_live_on_the_servers_keepalives_alone(ews: FakeEws, style: str) -> None:
    ews.keepalive(KEEPALIVE, style)
    address = "rep@fabrikam.test"
    ews.add_mailbox(address)
    provider = ExchangeProvider(address, ews.credentials(address, "ntlm"))
    beats: list[float] = []
    provider.push_alive = lambda: beats.append(time.monotonic())
    changes: list[float] = []
    stop = threading.Event()
    watcher = threading.Thread(target=provider.watch, args=(stop, lambda: changes.append(1)))
    watcher.start()
    try:
        wait_for("the first frame", lambda: bool(beats), 5)
        time.sleep(3 * KEEPALIVE)
        ews.stall_streams()  # a pause shorter than SILENCE: the stream is kept
        paused = time.monotonic()
        time.sleep(3 * KEEPALIVE)
        ews.resume_streams()
        resumed = time.monotonic()
        time.sleep(3 * KEEPALIVE)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert not watcher.is_alive()
    before = [b for b in beats if b < paused]
    assert len(before) >= 3  # the opening frame, then one per keep-alive
    assert max(b - a for a, b in itertools.pairwise(before)) < 3 * KEEPALIVE
    # Marked by what the server wrote, never by a clock of ours: nothing while it was silent.
    assert [b for b in beats if paused + 2 * KEEPALIVE < b < resumed] == []
    assert len([b for b in beats if b > resumed]) >= 2
    assert changes == []  # a keep-alive (a StatusEvent too) is not new mail


def test_a_prompt_exchange_stream_spares_the_syncs_of_a_burst_once_its_folders_were_listed(
    ews: FakeEws, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    seller, enrollment, _ = prompt_exchange_seller(ews, listener)

    listed_for_the_step_then_window_passes(seller.mailbox_id, enrollment, monkeypatch)
    # Later in the burst: the sync is out of its window, the prompt, live stream vouches.
    assert live(seller.mailbox_id)  # kept so by keep-alives alone: nothing arrived since
    assert send_due_step(enrollment, 1) == "sent"
    assert queued(queues.SYNC, SYNC_JOB) == []  # no sync was asked for
    assert sent_count(enrollment) == 2


def test_a_stalled_stream_stops_being_live_and_a_reply_meanwhile_halts_the_next_step(
    ews: FakeEws, listener: Listener
) -> None:
    seller, enrollment, first_id = prompt_exchange_seller(ews, listener)
    due = fall_due_after_last_sync(seller.mailbox_id, enrollment)

    ews.stall_streams()  # held open, nothing written: no keep-alive, no event
    stalled = time.monotonic()
    wait_for("the stalled stream to stop being live", lambda: not live(seller.mailbox_id), 10)
    assert time.monotonic() - stalled < SILENCE + 2  # far within LIVE_TTL_SECONDS
    # The reply lands while the stream is silent: no push tells us.
    ews.deliver(seller.address, inbound("dana@acme.test", seller.address, first_id))
    wait_for(
        "the push window", lambda: time.time() > due.timestamp() + push_latency.PROMPT_SECONDS, 8
    )
    assert not pushed(seller.mailbox_id)
    assert not live(seller.mailbox_id)  # the listener's reconnects stall too: never marked

    assert not ready_to_send(enrollment, 1)  # not fresh: a sync first
    assert send_due_step(enrollment, 1) == "waiting for a fresh sync"
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
    assert sent_count(enrollment) == 1
    run_jobs(queues.SYNC)
    assert state_of(enrollment) == ("replied", "reply from dana@acme.test")
    assert send_due_step(enrollment, 1) == "nothing due"
    assert sent_count(enrollment) == 1
    # One stopper thread for all open streams, never one per stream (ever opened);
    # it ends within STOP_CHECK_SECONDS of the last stream.
    wait_for("the ended streams' stopper to end", lambda: stream_stoppers() <= 1, 3)


def test_streams_set_up_a_few_at_a_time_and_every_one_holds(
    ews: FakeEws, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10,000 streams started together each queued its set-up for the GIL (450 s to
    # hold them all); the listener lets STREAM_SETUPS_AT_ONCE set up at a time, and
    # each gives its turn back once Exchange answered its GetStreamingEvents.
    monkeypatch.setattr(listener, "setups", threading.BoundedSemaphore(2))
    ews.app.subscribe_seconds = 0.2  # a busy server: set-ups overlap unless held back
    harness = ExchangeHarness(ews)
    sellers = [make_seller(harness) for _ in range(6)]
    listener.refresh()
    wait_for("every stream's first frame", lambda: all(live(s.mailbox_id) for s in sellers), 20)
    assert ews.app.most_subscribing == 2
    # Held streams keep no turn: a mailbox connected now sets up at once.
    ews.app.most_subscribing = 0
    late = make_seller(harness)
    listener.refresh()
    wait_for("the new stream's first frame", lambda: live(late.mailbox_id), 5)
    assert ews.app.most_subscribing == 1
