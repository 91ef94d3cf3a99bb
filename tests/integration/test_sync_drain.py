"""Sync requests drained many at a time: once per burst, never two at once, nothing lost.

Real Redis, the real database, the fake Gmail behind the real Gmail client, and
for the process tests the Procfile's own `sync` command (`python -m
worker.sync.drain`), SIGKILLed the way a dyno dies.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ResponseError
from sqlalchemy import event, insert, select
from sqlalchemy.pool import Pool

from config import Settings
from core import db as core_db
from core.crypto import encrypt_json
from core.db import session_scope
from core.models import Mailbox, MailboxPush, PushKind, Team, utcnow
from core.redis import get_redis
from tests.asgi_client import AsgiClient
from tests.integration.test_provider_contract import newsletter
from tests.services import process
from tests.stack import ROOT, Stack
from worker.sync import wanted
from worker.sync.drain import Drainer
from worker.sync.engine import request_sync

pytestmark = pytest.mark.integration

PUSH_TOKEN = "drain-test-push-token-0123456789"


def _mailboxes(fake: Any, count: int) -> dict[int, str]:
    """`count` connected Gmail mailboxes, cursors at their current history (mailbox → address)."""
    now = utcnow()
    with session_scope() as session:
        team = Team(name="Drain")
        session.add(team)
        session.flush()
        rows = []
        for n in range(count):
            address = f"drain{n:03d}@seller.test"
            creds = fake.grant(address)
            rows.append(
                {
                    "team_id": team.id,
                    "kind": "gmail",
                    "email": address,
                    "credentials_encrypted": encrypt_json(creds),
                    "sync_cursor": {"history_id": str(fake.store.user(address).history_id)},
                    "status": "active",
                    "last_synced_at": now,
                    "created_at": now - timedelta(days=1),
                }
            )
        session.execute(insert(Mailbox), rows)
        ids = {m.id: m.email for m in session.scalars(select(Mailbox))}
        session.execute(
            insert(MailboxPush),
            [
                {
                    "mailbox_id": mailbox_id,
                    "kind": PushKind.GMAIL_WATCH,
                    "external_id": address,
                    "expires_at": now + timedelta(days=7),
                    "renewed_at": now,
                    "created_at": now,
                }
                for mailbox_id, address in ids.items()
            ],
        )
        return ids


def _history_reads(fake: Any) -> int:
    """How many syncs read a mailbox: each sync lists its history once (as "me")."""
    return int(fake.calls.count(lambda c: c.label == "users.history.list"))


def _synced_since(mailbox_ids: list[int], moment: Any) -> set[int]:
    with session_scope() as session:
        return set(
            session.scalars(
                select(Mailbox.id).where(
                    Mailbox.id.in_(mailbox_ids), Mailbox.last_synced_at > moment
                )
            )
        )


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        # Redis's own clock waits: a BLPOP on a key nobody writes returns after 20 ms.
        get_redis().blpop(["test:drain:never"], timeout=0.02)


def _pending_of(consumer: str) -> list[str]:
    """Entry ids `consumer` claimed and never acknowledged."""
    rows: Any = get_redis().xpending_range(
        wanted.STREAM_KEY, wanted.GROUP, min="-", max="+", count=1000, consumername=consumer
    )
    return [r["message_id"].decode() for r in rows]


def _consumers() -> list[str]:
    try:
        rows = get_redis().xinfo_consumers(wanted.STREAM_KEY, wanted.GROUP)
    except ResponseError:  # no stream yet: no drainer has started
        return []
    return [c["name"].decode() if isinstance(c["name"], bytes) else c["name"] for c in rows]


# -- in this process, both databases --------------------------------------------------


def test_fifty_pushes_in_a_burst_sync_the_mailbox_once(
    env: Settings,
    fake_gmail: Any,
    asgi: AsgiClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GMAIL_PUSH_TOKEN", PUSH_TOKEN)
    from config import get_settings

    get_settings.cache_clear()
    ids = _mailboxes(fake_gmail, 2)
    (mailbox_id, address), (quiet_id, _) = sorted(ids.items())
    fake_gmail.deliver(address, newsletter(address, 1))
    history = fake_gmail.store.user(address).history_id
    envelope = fake_gmail.pubsub.envelope(address, history, "projects/p/subscriptions/s")

    for _ in range(50):
        answer = asgi.post(
            f"/webhooks/gmail?token={PUSH_TOKEN}",
            envelope,
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 204
    assert wanted.waiting() == [mailbox_id]  # fifty pushes, one request
    assert wanted.backlog() == {"waiting": 1, "claimed": 0, "later": 0}

    assert Drainer(threads=4).run(burst=True) == 1
    assert _history_reads(fake_gmail) == 1  # synced exactly once, and only that mailbox
    with session_scope() as session:
        cursor = session.scalar(select(Mailbox.sync_cursor).where(Mailbox.id == mailbox_id))
    assert cursor is not None and int(cursor["history_id"]) >= history  # it read the new mail
    assert wanted.backlog() == {"waiting": 0, "claimed": 0, "later": 0}  # acknowledged
    assert quiet_id not in wanted.waiting()


def test_a_busy_drainer_claims_a_thread_count_ahead_and_syncs_each_once(
    env: Settings, fake_gmail: Any
) -> None:
    ids = _mailboxes(fake_gmail, 10)
    for mailbox_id in ids:
        request_sync(mailbox_id)
    drainer = Drainer(threads=2)
    try:
        assert drainer.round() == 4  # its two threads' syncs and the next two, in one claim
        assert wanted.backlog()["claimed"] == 4  # acknowledged only as they finish
        assert wanted.backlog()["waiting"] == 6
    finally:
        drainer.run(burst=True)
    assert _history_reads(fake_gmail) == 10  # every mailbox synced, and only once
    assert drainer.synced == 10
    assert wanted.backlog() == {"waiting": 0, "claimed": 0, "later": 0}


def _connections_opened_by_a_burst(fake: Any, pool: int, threads: int) -> int:
    """Connections a `threads`-thread drainer opens syncing 40 mailboxes, its pool sized `pool`."""
    for mailbox_id in _mailboxes(fake, 40):
        request_sync(mailbox_id)
    core_db.reset_for_tests()  # the engine is built again, with the pool the process asks for
    core_db.size_pool(pool)
    opened: list[object] = []

    def _opened(dbapi_connection: object, _record: object) -> None:
        opened.append(dbapi_connection)

    event.listen(Pool, "connect", _opened)
    try:
        drainer = Drainer(threads=threads)
        assert drainer.run(burst=True) == 40
    finally:
        event.remove(Pool, "connect", _opened)
    assert _history_reads(fake) == 40
    return len(opened)


def test_a_sync_process_keeps_a_connection_per_thread_instead_of_one_per_sync(
    env: Settings, fake_gmail: Any
) -> None:
    """A pool sized to the threads (size_pool(threads), which `python -m worker.sync.drain`
    calls in `main`; that call itself is not exercised here): eight threads syncing 40
    mailboxes open eight connections at most, and reuse them. A pool smaller than the
    threads closes what it cannot keep and opens again (the control below): on
    PostgreSQL each of those is a new backend."""
    assert _connections_opened_by_a_burst(fake_gmail, pool=8, threads=8) <= 8


def test_a_pool_smaller_than_the_threads_opens_connections_again(
    env: Settings, fake_gmail: Any
) -> None:
    """The control: the count above can see churn."""
    assert _connections_opened_by_a_burst(fake_gmail, pool=1, threads=8) > 8


def test_the_pool_is_sized_before_the_engine_is_built(env: Settings) -> None:
    core_db.reset_for_tests()
    with pytest.raises(ValueError, match="at least one"):
        core_db.size_pool(0)
    core_db.size_pool(3)
    assert core_db.get_engine().pool.size() == 3  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="before the engine is built"):
        core_db.size_pool(4)
    core_db.reset_for_tests()
    assert core_db.get_engine().pool.size() == core_db.DEFAULT_POOL_SIZE  # type: ignore[attr-defined]


def test_a_push_during_a_sync_asks_for_exactly_one_more(env: Settings, fake_gmail: Any) -> None:
    """The id leaves the set when claimed: mail that arrives mid-sync is never stranded."""
    [(mailbox_id, address)] = _mailboxes(fake_gmail, 1).items()
    assert request_sync(mailbox_id, pushed=True)
    consumer = wanted.Consumer("test-consumer")
    [entry] = consumer.claim(10, None)
    assert entry.mailbox_id == mailbox_id
    # The sync has begun (claimed); new mail is pushed twice before it ends.
    fake_gmail.deliver(address, newsletter(address, 2))
    assert request_sync(mailbox_id, pushed=True)
    assert not request_sync(mailbox_id, pushed=True)
    consumer.done([entry])
    assert wanted.waiting() == [mailbox_id]


def test_entries_taken_over_from_a_drainer_that_died_before_its_srem_leave_the_set(
    env: Settings, fake_gmail: Any
) -> None:
    """A drainer that read entries and died before taking their ids out of the set (or
    whose XREADGROUP answer a Redis restart cut off, so that it read again): once the
    entries are taken over and synced, the mailbox can ask for a sync again. Left in the
    set, its id made every later request a no-op, and the mailbox was never synced again."""
    [(mailbox_id, _)] = _mailboxes(fake_gmail, 1).items()
    survivor = wanted.Consumer("survivor", lease_seconds=0.05)
    assert request_sync(mailbox_id, pushed=True)
    # What the dead drainer did: XREADGROUP, and nothing after it.
    get_redis().xreadgroup(wanted.GROUP, "dead-drainer", {wanted.STREAM_KEY: ">"}, count=10)
    time.sleep(0.1)  # past the lease
    [entry] = survivor.take_over()
    assert entry.mailbox_id == mailbox_id
    survivor.done([entry])  # its sync ran
    assert request_sync(mailbox_id, pushed=True)  # new mail since: queued, not swallowed
    assert wanted.waiting() == [mailbox_id]


def test_a_stranded_request_gets_its_entry_back_and_its_mailbox_is_synced(
    env: Settings, fake_gmail: Any
) -> None:
    """An id left in the set with no stream entry (by a drainer that died before its SREM,
    before take-overs took such ids out): the drainer gives it an entry and syncs it."""
    mailboxes = list(_mailboxes(fake_gmail, 2))
    stranded, queued = mailboxes
    assert request_sync(queued, pushed=True)
    get_redis().sadd(wanted.WANTED_KEY, str(stranded))  # a promise with no entry behind it
    assert not request_sync(stranded, pushed=True)  # the no-op it caused
    drainer = Drainer(threads=1, name="healer")
    assert drainer.run(burst=True) == 2  # both synced: the queued one and the stranded one
    assert wanted.waiting() == []
    assert wanted.requeue_stranded() == 0
    assert request_sync(stranded, pushed=True)


# -- the Procfile's `sync` processes, PostgreSQL ------------------------------------------


@pytest.fixture
def drainers(
    env: Settings, fake_gmail: Any, tmp_path: Path
) -> Iterator[Callable[..., tuple[Any, Path]]]:
    started: list[Any] = []
    stack = Stack({"LOG_LEVEL": "INFO"}, tmp_path / "logs")

    def start(name: str, *args: str) -> tuple[Any, Path]:
        log_path = stack.log_dir / f"{name}.log"
        proc = process.spawn(
            [*stack.commands["sync"], *args], log_path=log_path, env=stack.env, cwd=ROOT
        )
        started.append(proc)
        return proc, log_path

    yield start
    for proc in started:
        process.stop(proc)


def _listed(log_paths: list[Path]) -> dict[int, int]:
    """Messages each mailbox's syncs listed, summed over the processes' `sync_done` lines."""
    totals: dict[int, int] = {}
    for path in log_paths:
        for m in re.finditer(r"sync_done mailbox_id=(\d+) listed=(\d+)", path.read_text()):
            totals[int(m[1])] = totals.get(int(m[1]), 0) + int(m[2])
    return totals


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_sync_processes_never_sync_one_mailbox_at_once(
    env: Settings, fake_gmail: Any, drainers: Callable[..., tuple[Any, Path]]
) -> None:
    """Two syncs of one mailbox at once would both list its new mail from the same cursor."""
    ids = _mailboxes(fake_gmail, 3)
    first, first_log = drainers("a", "--threads", "4")
    second, second_log = drainers("b", "--threads", "4")
    _wait_for(
        "both drainers",
        lambda: all("sync_drainer_start" in p.read_text() for p in (first_log, second_log)),
    )

    def both_synced() -> bool:
        return all("sync_done" in path.read_text() for path in (first_log, second_log))

    # Mail and a push for each mailbox, faster than they sync: 25 rounds, and more
    # until both processes have synced (on a loaded machine the first to block on
    # the stream can take every request of a short burst; the test is about two).
    rounds, deadline = 0, time.monotonic() + 60
    while rounds < 25 or not both_synced():
        assert time.monotonic() < deadline, "one of the two processes never synced"
        for mailbox_id, address in ids.items():
            fake_gmail.deliver(address, newsletter(address, rounds))
            request_sync(mailbox_id, pushed=True)
        rounds += 1
        if rounds >= 25:
            time.sleep(0.05)

    # Read = every message listed and nothing left to sync. (Not "a sync began after the
    # last push": the sync that push asked for may begin before the test reads its clock.)
    def all_read() -> bool:
        listed = _listed([first_log, second_log])
        return all(listed.get(m, 0) >= rounds for m in ids) and wanted.backlog() == {
            "waiting": 0,
            "claimed": 0,
            "later": 0,
        }

    _wait_for("every mailbox's mail listed", all_read)
    assert first.poll() is None and second.poll() is None
    listed = _listed([first_log, second_log])
    assert listed == {mailbox_id: rounds for mailbox_id in ids}  # each message listed once


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_sync_process_killed_mid_batch_leaves_its_mailboxes_to_the_survivor(
    env: Settings, fake_gmail: Any, drainers: Callable[..., tuple[Any, Path]]
) -> None:
    ids = _mailboxes(fake_gmail, 40)
    for address in ids.values():
        fake_gmail.deliver(address, newsletter(address, 1))
    delivered = utcnow()
    victim, _ = drainers("victim", "--threads", "8", "--lease-seconds", "2")
    assert wanted.want_many(list(ids)) == len(ids)

    def working() -> bool:
        return _history_reads(fake_gmail) >= 5 and any(_pending_of(c) for c in _consumers())

    _wait_for("the victim syncing a batch", working)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    [dead] = _consumers()
    in_hand = _pending_of(dead)
    assert in_hand, "killed between batches: nothing was in hand"
    finished_by_victim = _synced_since(list(ids), delivered)

    _, survivor_log = drainers("survivor", "--lease-seconds", "2")
    _wait_for(
        "every mailbox synced and acknowledged",
        lambda: (
            _synced_since(list(ids), delivered) == set(ids)
            and wanted.backlog() == {"waiting": 0, "claimed": 0, "later": 0}
        ),
    )
    assert not _pending_of(dead)
    assert "sync_requests_taken_over" in survivor_log.read_text()
    assert len(finished_by_victim) < len(ids)  # the survivor had work: the killed batch, the rest
