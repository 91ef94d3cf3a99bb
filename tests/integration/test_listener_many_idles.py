"""The listener holds many IMAP IDLEs on a few threads, and each still works.

Before, a listener ran a thread per mailbox: at 10,000 IDLEs (bench.scale_imap)
those threads queued for the GIL, let their live marks lapse and took the
machine. Now an IDLE waits on the listener's one selector between its rounds
(`worker.watch_hub`). Here, with real Dovecot and rounds of a second: more
mailboxes than the listener's pools have threads are held live, stay live
through several rounds without reconnecting, announce the mail delivered to
them (and only to them), and all let go at once when the listener stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

import worker.sync.imap as imap_module
from config import Settings
from core.db import session_scope
from core.models import Team
from tests.integration.provider_harness import ImapHarness
from tests.integration.test_provider_contract import make_mailbox
from tests.services.dovecot import DovecotServer
from tests.services.smtp import SmtpServer
from worker import listener as listener_module
from worker.listener import Listener
from worker.sync import push_latency

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

ROUND_SECONDS = 1.0  # PUSH_ALIVE_SECONDS, so that several rounds pass in seconds
HUB_THREADS = listener_module.CONNECTS_AT_ONCE + listener_module.HOLD_THREADS + 1  # + selector
MAILBOXES = HUB_THREADS + 35


@pytest.fixture
def listener(env: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    monkeypatch.setattr(imap_module, "PUSH_ALIVE_SECONDS", ROUND_SECONDS)
    running = Listener(shard=0, shards=1)
    yield running
    running.stop_watches()


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.05)


def note(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "news@shop.test", to, "News"
    msg["Message-ID"] = make_msgid(domain="shop.test")
    msg.set_content("news\n")
    return msg.as_bytes()


def pushed(mailbox_id: int) -> bool:
    return push_latency.pending_push(mailbox_id) is not None


def test_many_idles_are_held_on_a_few_threads_and_each_announces_its_mail(
    env: Settings, dovecot: DovecotServer, smtp_server: SmtpServer, listener: Listener
) -> None:
    harness = ImapHarness(dovecot, smtp_server)
    with session_scope() as session:
        team = Team(name="Many IDLEs")
        session.add(team)
        session.flush()
        team_id = team.id
    mailboxes = dict(make_mailbox(harness, team_id) for _ in range(MAILBOXES))
    threads_before = threading.active_count()

    listener.refresh()
    ids = list(mailboxes)
    wait_for("every IDLE live", lambda: push_latency.live_among(ids) == set(ids), 60)
    since = {m: push_latency.live_since(m) for m in ids}
    time.sleep(3 * ROUND_SECONDS)  # rounds of DONE and IDLE, each answered

    added = threading.active_count() - threads_before
    assert added <= HUB_THREADS < MAILBOXES, f"{added} threads for {MAILBOXES} IDLEs"
    assert len(listener.hub) == MAILBOXES
    # Still live, and on the same connection: a reconnect would have cleared the mark.
    assert {m: push_latency.live_since(m) for m in ids} == since

    told = ids[::17]
    for mailbox_id in told:
        dovecot.deliver(mailboxes[mailbox_id], note(mailboxes[mailbox_id]))
    wait_for("every delivery announced", lambda: all(pushed(m) for m in told), 10)
    time.sleep(ROUND_SECONDS)  # a round more: nothing is announced for the others
    assert [m for m in ids if pushed(m)] == told

    started = time.monotonic()
    listener.stop_watches()
    assert time.monotonic() - started < listener_module.STOP_WAIT_SECONDS
    assert len(listener.hub) == 0
    assert push_latency.live_among(ids) == set()
