"""A burst of threads on the shared Redis client waits for a connection, never fails.

The `listener` runs a thread per mailbox; thousands of them reach Redis at once
when it starts (each marks its connection live and asks for a sync). The shared
client's pool holds `core.redis.POOL_CONNECTIONS`; a thread beyond that waits
for one to come back instead of raising "Too many connections" (which ended
the thread, and the watch with it). Real Redis; the commands block on purpose.
"""

from __future__ import annotations

import threading

import pytest

from config import Settings
from core import redis as core_redis


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    """Redis only: one engine is enough."""
    return sqlite_database_url


def test_more_threads_than_pooled_connections_all_get_their_answer(env: Settings) -> None:
    client = core_redis.get_redis()
    threads = core_redis.POOL_CONNECTIONS + 50
    answers: list[object] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def wait_on_a_list() -> None:
        try:
            answer = client.blpop(["nothing-comes"], timeout=0.3)  # holds its connection
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            with lock:
                failures.append(exc)
            return
        with lock:
            answers.append(answer)

    running = [threading.Thread(target=wait_on_a_list) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(timeout=30)
    assert failures == []
    assert answers == [None] * threads
