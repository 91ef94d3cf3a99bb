"""A mailbox's sync lock is a lease: held as long as the sync runs, lost with its process.

Found by the chaos run (`make chaos`): the lock was one 15-minute lock, so a
worker SIGKILLed mid-sync left its mailbox unsynced for 15 minutes, replies and
bounces unrecorded, and every sync of it holding a worker 20 s to say "busy".
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from config import Settings
from worker.sync import engine as sync_engine

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
