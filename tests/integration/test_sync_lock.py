"""A mailbox's sync lock is a lease: held as long as the sync runs, lost with its process.

Found by the chaos run (`make chaos`): the lock was one 15-minute lock, so a
worker SIGKILLed mid-sync left its mailbox unsynced for 15 minutes, replies and
bounces unrecorded, and every sync of it holding a worker 20 s to say "busy".
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import pytest

from config import Settings
from core.redis import get_redis
from worker.sync import engine as sync_engine
from worker.sync.lease import RENEWER

pytestmark = pytest.mark.integration

LEASE = 1.5


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url  # Redis is what this is about


@pytest.fixture
def short_lease(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_engine, "LOCK_LEASE_SECONDS", LEASE)
    monkeypatch.setattr(sync_engine, "LOCK_WAIT_SECONDS", 0)


def _hold_lock_in_child(mailbox_id: int) -> int:
    """Fork a process that takes the mailbox's lock and then hangs, as a long sync does."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            with sync_engine.mailbox_lock(mailbox_id) as locked:
                os.write(write_end, b"1" if locked else b"0")
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 1)
    os.close(read_end)
    assert answer == b"1", "the child did not get the lock"
    return pid


def _free(mailbox_id: int) -> bool:
    with sync_engine.mailbox_lock(mailbox_id) as locked:
        return locked


def test_a_running_sync_keeps_its_lock_past_the_lease(short_lease: None) -> None:
    pid = _hold_lock_in_child(7)
    try:
        time.sleep(2.5 * LEASE)  # without renewal the lock would have lapsed twice
        assert not _free(7)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def test_a_sync_killed_mid_way_frees_its_mailbox_within_one_lease(short_lease: None) -> None:
    pid = _hold_lock_in_child(8)
    assert not _free(8)
    os.kill(pid, signal.SIGKILL)  # a lost dyno: no finally, no release
    os.waitpid(pid, 0)
    killed = time.monotonic()
    while not _free(8):
        assert time.monotonic() - killed < LEASE + 1.0, "the mailbox stayed locked"
        time.sleep(0.1)
    assert _free(9)  # and the lock is per mailbox


def test_one_thread_keeps_every_held_lease_alive(short_lease: None) -> None:
    with sync_engine.mailbox_lock(20) as first, sync_engine.mailbox_lock(21) as second:
        assert first and second
        time.sleep(2.5 * LEASE)  # both would have lapsed twice unrenewed
        assert not _free(20) and not _free(21)
        renewers = [t for t in threading.enumerate() if t.name == "sync-lock-leases"]
        assert len(renewers) == 1
        assert RENEWER.holding() == 2
    assert _free(20) and _free(21)
    assert RENEWER.holding() == 0


def test_a_lease_taken_by_another_holder_is_reported_and_left_to_it(
    short_lease: None, caplog: pytest.LogCaptureFixture
) -> None:
    redis = get_redis()
    key = sync_engine.LOCK_KEY.format(mailbox_id=22)
    with (
        caplog.at_level(logging.WARNING, logger="worker.sync.engine"),
        sync_engine.mailbox_lock(22) as locked,
    ):
        assert locked
        redis.set(key, "another-holder", px=60_000)  # ours lapsed; someone took it
        deadline = time.monotonic() + 3 * LEASE
        while "sync_lock_lost mailbox_id=22" not in caplog.text:
            assert time.monotonic() < deadline, "the lost lease was not reported"
            time.sleep(0.05)
    assert redis.get(key) == b"another-holder"  # renewing never takes it back
    redis.delete(key)


def test_a_released_lock_is_not_renewed_or_reported(
    short_lease: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="worker.sync.engine"):
        for _ in range(3):  # each held through one renewal (due at a third of the lease)
            with sync_engine.mailbox_lock(23) as locked:
                assert locked
                time.sleep(0.6 * LEASE)
        time.sleep(LEASE)  # the renewals that would have come next
    assert "sync_lock" not in caplog.text
    assert _free(23)
