"""What the chaos run found about Redis restarts, pinned down on a private Redis.

An RQ worker quit ("found an unhandled exception, quitting") when Redis went
away right after a job, outside the dequeue loop that retries; a Heroku dyno
that crashes is restarted with growing delays, and honcho (`make run`) stops
every process when one exits. Every client now retries with back-off for about
16 s (`core.redis.ResilientRedis`, also RQ's via `--connection-class`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from config import Settings, get_settings
from core import redis as core_redis
from core.redis import ResilientRedis
from tests.conftest import service_environment
from tests.services.redis import PrivateRedisServer
from tests.stack import ROOT, Stack
from worker.queueing import enqueue

pytestmark = pytest.mark.integration


@pytest.fixture
def database_url(sqlite_database_url: str) -> str:
    return sqlite_database_url  # Redis is what this is about


def test_a_command_waits_out_a_redis_restart(private_redis: PrivateRedisServer) -> None:
    client = ResilientRedis.from_url(private_redis.url())
    client.set("before", "1")
    private_redis.stop()
    answers: list[object] = []
    # Issued while Redis is down; the server is back 4 s later (longer than redis-py's
    # default retries last, about 2 s).
    command = threading.Thread(target=lambda: answers.append(client.get("before")))
    command.start()
    time.sleep(4.0)
    private_redis.start()  # from the main thread: spawned servers die with their thread
    command.join(timeout=30)
    assert answers == [b"1"]


def test_every_procfile_rq_process_uses_the_resilient_client() -> None:
    commands = [
        line.partition(":")[2]
        for line in (ROOT / "Procfile").read_text().splitlines()
        if " rq " in f" {line.partition(':')[2]} "
    ]
    assert commands, "no rq process in the Procfile"
    for command in commands:
        assert "--connection-class core.redis.ResilientRedis" in command, command


def test_the_worker_keeps_working_through_redis_restarts(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = PrivateRedisServer(appendonly=True, appendfsync="everysec").start()
    try:
        monkeypatch.setenv("REDIS_URL", server.url())
        get_settings.cache_clear()
        core_redis.get_redis.cache_clear()
        environment = service_environment(env.database_url, server.url(), env.var_dir)
        stack = Stack(environment, tmp_path / "logs").start("worker")
        try:
            deadline = time.monotonic() + 8
            restarts = 0
            while time.monotonic() < deadline or restarts < 5:
                for _ in range(4):  # a steady stream of quick jobs
                    enqueue("default", "worker.sequences.jobs.resume_paused", retry=None)
                time.sleep(0.3)
                server.restart()
                restarts += 1
            enqueue("default", "worker.sequences.jobs.resume_paused", retry=None)
            stack.wait_for(
                "the queue to drain after the restarts",
                lambda: core_redis.get_redis().llen("rq:queue:default") == 0,
                timeout=60,
            )
            assert stack.running["worker"].poll() is None, stack.logs()
        finally:
            stack.stop()
    finally:
        server.close()
        core_redis.get_redis.cache_clear()
