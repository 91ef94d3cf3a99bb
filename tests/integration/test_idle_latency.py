"""IDLE measured, not assumed: the listener's pushes, the syncs they cause, and the verdict.

Real servers, the real listener (`worker.listener.Listener`) holding IDLE, syncs
run by RQ's own worker in this process:

- Dovecot reports new mail within a second: after three deliveries its push is
  trusted: once a sync has listed the folders after a step fell due, the
  burst's later steps go out without another sync while the listener holds it
  (and wait for one once it stops) — unless the mailbox syncs folders besides
  INBOX, where IDLE does not look. A reply a rule filed in such a folder, or in
  one it made after the last list, must still stop the step: a sync runs first.
- Courier's IDLE looks at the folder every IMAP_IDLE_TIMEOUT seconds. Debian's
  default is 60; this test's own Courier runs with 8 so it takes seconds (its
  60 s are replayed from recorded timings in tests/unit/test_push_latency.py).
  A message delivered just after a report waits a whole interval: the verdict
  is "slow", and the poll then syncs that mailbox every
  SIGHTLINE_SLOW_PUSH_POLL_SECONDS.

PostgreSQL only: the database is not what differs here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from config import Settings, get_settings, queues
from core.db import session_scope
from core.models import Enrollment, Mailbox, utcnow
from core.redis import get_redis
from tests.integration.provider_harness import ImapHarness, queued, run_jobs
from tests.integration.test_provider_contract import (
    Seller,
    inbound,
    make_seller,
    send_first_step,
    state_of,
)
from tests.services.courier import CourierServer
from tests.services.imap_server import ImapTestServer
from tests.services.smtp import SmtpServer
from worker.listener import Listener
from worker.sequences.freshness import ready_to_send
from worker.sync import push_latency
from worker.sync.engine import SYNC_JOB, sync_mailbox
from worker.sync.polling import poll_mailboxes

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

COURIER_IDLE_SECONDS = 8
SHORT_FRESH_SECONDS = 5  # SIGHTLINE_FRESH_SECONDS' least
PUSH_WINDOW = timedelta(seconds=push_latency.PROMPT_SECONDS)


@pytest.fixture
def fast_polling_courier() -> Iterator[CourierServer]:
    with CourierServer(settings={"IMAP_IDLE_TIMEOUT": str(COURIER_IDLE_SECONDS)}) as server:
        yield server


@pytest.fixture
def listener(env: Settings) -> Iterator[Listener]:
    running = Listener(shard=0, shards=1)
    yield running
    running.stop_watches()


def note(to: str, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "news@shop.test", to, f"News {n}"
    msg["Message-ID"] = make_msgid(domain="shop.test")
    msg.set_content("news\n")
    return msg.as_bytes()


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)


def pushed(mailbox_id: int) -> bool:
    return bool(get_redis().exists(push_latency.PUSHED_KEY.format(mailbox_id=mailbox_id)))


def push_state(mailbox_id: int) -> tuple[list[float] | None, bool | None]:
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        return mailbox.push_delays, mailbox.push_prompt


def start_listening(listener: Listener, mailbox_id: int) -> None:
    listener.refresh()
    wait_for("the listener's IDLE", lambda: push_latency.live_since(mailbox_id) is not None, 10)
    run_jobs(queues.SYNC)  # the catch-up sync every (re)connection asks for


def deliver_and_sync(server: ImapTestServer, address: str, mailbox_id: int, n: int) -> None:
    server.deliver(address, note(address, n))
    wait_for("IDLE to report the delivery", lambda: pushed(mailbox_id), 3 * COURIER_IDLE_SECONDS)
    assert run_jobs(queues.SYNC) == 1


def fall_due_after_last_sync(mailbox_id: int, enrollment_id: int) -> datetime:
    with session_scope() as session:
        synced = session.get_one(Mailbox, mailbox_id).last_synced_at
        assert synced is not None
        due = synced + timedelta(milliseconds=1)
        session.get_one(Enrollment, enrollment_id).next_step_at = due
        return due


def age(mailbox_id: int, seconds: float) -> None:
    with session_scope() as session:
        mailbox = session.get_one(Mailbox, mailbox_id)
        mailbox.last_synced_at = utcnow() - timedelta(seconds=seconds)


def measured_seller(
    dovecot: ImapTestServer, smtp_server: SmtpServer, listener: Listener
) -> tuple[Seller, int, str]:
    """A seller whose first step went to Dana, its IDLE held and measured by three
    deliveries. (seller, enrolment id, the step's Message-ID)"""
    seller = make_seller(ImapHarness(dovecot, smtp_server))
    enrollment, message_id = send_first_step(seller, "dana@acme.test")
    start_listening(listener, seller.mailbox_id)
    for n in range(push_latency.MEASUREMENTS_NEEDED):
        deliver_and_sync(dovecot, seller.address, seller.mailbox_id, n)
    return seller, enrollment, message_id


def listed_for_the_step_then_window_passes(
    mailbox_id: int, enrollment_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 2 falls due after the last sync; the list the syncs keep is older than it,
    so its first check asks for a sync that lists. Then time passes beyond that
    sync's window (SIGHTLINE_FRESH_SECONDS, at its least) and the push's own P
    seconds: from then on only a live, prompt push can vouch for the mailbox."""
    monkeypatch.setenv("SIGHTLINE_FRESH_SECONDS", str(SHORT_FRESH_SECONDS))
    get_settings.cache_clear()
    due = fall_due_after_last_sync(mailbox_id, enrollment_id)
    assert not ready_to_send(enrollment_id, 1)  # a list older than the step: a sync first
    assert queued(queues.SYNC, SYNC_JOB) == [(mailbox_id,)]
    assert run_jobs(queues.SYNC) == 1
    with session_scope() as session:
        synced = session.get_one(Mailbox, mailbox_id).last_synced_at
    assert synced is not None and synced > due
    later = max(synced + timedelta(seconds=SHORT_FRESH_SECONDS), due + PUSH_WINDOW)
    time.sleep(max(0.0, (later - utcnow()).total_seconds() + 0.2))


def test_prompt_idle_spares_the_syncs_of_a_burst_once_its_folders_were_listed(
    env: Settings,
    dovecot: ImapTestServer,
    smtp_server: SmtpServer,
    listener: Listener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seller, enrollment, _ = measured_seller(dovecot, smtp_server, listener)
    delays, prompt = push_state(seller.mailbox_id)
    assert delays is not None and len(delays) == push_latency.MEASUREMENTS_NEEDED
    assert max(delays) <= push_latency.PROMPT_SECONDS
    assert prompt is True

    listed_for_the_step_then_window_passes(seller.mailbox_id, enrollment, monkeypatch)
    # Later in the burst: the sync is out of its window, the prompt, live IDLE vouches.
    assert ready_to_send(enrollment, 1)
    assert queued(queues.SYNC, SYNC_JOB) == []

    listener.stop_watches()  # the listener goes away
    assert push_latency.live_since(seller.mailbox_id) is None
    assert not ready_to_send(enrollment, 1)  # no push now: a sync first
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]


def test_a_reply_in_a_folder_a_rule_made_after_the_last_list_stops_a_follow_up(
    env: Settings, dovecot: ImapTestServer, smtp_server: SmtpServer, listener: Listener
) -> None:
    """The mailbox syncs INBOX alone, so its prompt IDLE watches all it syncs; then a
    rule makes "Customers" and files Dana's answer there. Nothing pushes it, and
    the syncs' kept list does not name it: the step waits for a list made since."""
    seller, enrollment, message_id = measured_seller(dovecot, smtp_server, listener)
    assert push_state(seller.mailbox_id)[1] is True
    dovecot.file_into(
        seller.address, "Customers", inbound("dana@acme.test", seller.address, message_id)
    )
    due = fall_due_after_last_sync(seller.mailbox_id, enrollment)
    time.sleep(max(0.0, (due - utcnow()).total_seconds() + push_latency.PROMPT_SECONDS + 0.2))
    assert push_latency.live_since(seller.mailbox_id) is not None  # live and prompt, but
    assert not ready_to_send(enrollment, 1)  # its folders were listed before the step
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
    assert run_jobs(queues.SYNC) == 1
    assert state_of(enrollment)[0] == "replied"


def test_a_reply_filed_outside_the_inbox_stops_a_follow_up_a_prompt_idle_would_let_out(
    env: Settings, dovecot: ImapTestServer, smtp_server: SmtpServer, listener: Listener
) -> None:
    seller, enrollment, message_id = measured_seller(dovecot, smtp_server, listener)
    assert push_state(seller.mailbox_id)[1] is True
    dovecot.file_into(seller.address, "Customers", note(seller.address, 9))
    assert sync_mailbox(seller.mailbox_id).listed == 1  # Customers is synced from now on

    # Dana's answer is filed in Customers by a rule: IDLE on INBOX says nothing.
    dovecot.file_into(
        seller.address, "Customers", inbound("dana@acme.test", seller.address, message_id)
    )
    due = fall_due_after_last_sync(seller.mailbox_id, enrollment)
    time.sleep(max(0.0, (due - utcnow()).total_seconds() + push_latency.PROMPT_SECONDS + 0.2))
    assert push_latency.live_since(seller.mailbox_id) is not None  # live and prompt, but
    assert not ready_to_send(enrollment, 1)  # it cannot vouch for Customers: a sync first
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
    assert run_jobs(queues.SYNC) == 1
    assert state_of(enrollment)[0] == "replied"


def test_idle_that_only_polls_is_measured_slow_and_polled_often(
    env: Settings,
    fast_polling_courier: CourierServer,
    smtp_server: SmtpServer,
    listener: Listener,
) -> None:
    # smtp_server only fills in the mailbox's SMTP settings: nothing is sent here.
    seller = make_seller(ImapHarness(fast_polling_courier, smtp_server))
    start_listening(listener, seller.mailbox_id)
    deliver_and_sync(fast_polling_courier, seller.address, seller.mailbox_id, 1)
    # Delivered right after a report: Courier sees it at its next look, a whole
    # IMAP_IDLE_TIMEOUT later.
    deliver_and_sync(fast_polling_courier, seller.address, seller.mailbox_id, 2)

    delays, prompt = push_state(seller.mailbox_id)
    assert delays is not None and delays[-1] > push_latency.PROMPT_SECONDS
    assert prompt is False

    age(seller.mailbox_id, get_settings().slow_push_poll_seconds + 1)
    assert poll_mailboxes() == 1  # polled on the short interval, not the minute
    assert queued(queues.SYNC, SYNC_JOB) == [(seller.mailbox_id,)]
