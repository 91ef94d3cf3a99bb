"""Server processes that belong to one test session.

Owns: temporary folders that daemons which drop privileges can traverse, free
loopback ports, starting a child so that it dies with the test process (even when
that process is SIGKILLed), stopping it (TERM, then KILL), readiness polling, and
errors that carry the tail of the child's log.

Must never: signal or wait for a process it did not start.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Loaded before any fork: loading a library in a forked child of a threaded parent
# can deadlock, calling an already loaded function cannot.
_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1

# Each running child and the pid of the process that spawned it: a test may fork
# this process, and a forked copy exiting must not stop its parent's servers.
_running: dict[subprocess.Popen[bytes], int] = {}


class ServiceError(RuntimeError):
    """A test server misbehaved: it was found or started and then failed."""


class ServiceUnavailableError(ServiceError):
    """This machine lacks what a test server needs (not installed, not root).

    The message says what to install or run. Outside CI the fixtures turn this
    into a skip; in CI it fails the tests.
    """


def in_ci() -> bool:
    """True when the environment says this is a CI run (`CI` set and not false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def prereqs_state_dir() -> Path:
    """Where scripts/test-prereqs.sh keeps the servers it starts (the same default)."""
    default = f"/var/tmp/sightline-test-{os.getuid()}"
    return Path(os.environ.get("SIGHTLINE_TEST_STATE_DIR", default))


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last `lines` lines of a log file, or a note saying it is missing."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


def service_dir(name: str) -> Path:
    """Create a fresh folder under /tmp that unprivileged daemon users can traverse.

    `mkdtemp` makes 0700 folders; Dovecot's auth and mail processes run as other
    users and must reach files below it, hence 0755. /tmp rather than pytest's
    basetemp because /tmp/pytest-of-root is 0700 too, and unix socket paths must
    stay short (108 bytes).
    """
    path = Path(tempfile.mkdtemp(prefix=f"sightline-{name}-", dir="/tmp"))
    path.chmod(0o755)
    return path


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    Another process may take it before the caller binds it; callers that hand the
    port to a server retry on "address in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel sends SIGTERM to the
    # child when the test process dies, so a SIGKILLed pytest leaves no servers.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    args: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server process, its stdout and stderr appended to `log_path`.

    The child gets its own session, so a Ctrl-C in the terminal reaches pytest
    only, and pytest's finalizers stop the servers in order. It receives SIGTERM
    when the *thread* that spawned it ends (PR_SET_PDEATHSIG): spawn from the main
    thread, as fixtures do, for servers meant to outlive a helper thread.
    """
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
        )
    _running[proc] = os.getpid()
    return proc


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0, *, group: bool = False) -> None:
    """Stop a process started by `spawn`: SIGTERM, then SIGKILL after `timeout`.

    With `group`, the SIGKILL goes to the process group `spawn` created for it,
    so its children (forked, never re-grouped) end at the same moment.
    """
    _running.pop(proc, None)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if group:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()


def kill_group(pgid: int, timeout: float = 5.0) -> None:
    """SIGKILL what is left of a process group `spawn` created (daemons a server forked).

    Returns once none of them runs (or after `timeout`): a SIGKILL is delivered
    asynchronously, and a caller that checks, or reuses the server's folder,
    right after the kill could still meet a process that is about to die.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while living_in_group(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def living_in_group(pgid: int) -> list[str]:
    """Pids of the group's processes that still run (zombies waiting for init do not count)."""
    living = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            living.append(stat.parent.name)
    return living


def greets(host: str, port: int) -> bool:
    """True when an IMAP server on host:port sends its untagged OK greeting."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(256).startswith((b"* OK", b"* PREAUTH"))
    except OSError:
        return False


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started by `spawn`, as a crash would end it."""
    _running.pop(proc, None)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@atexit.register
def _stop_all() -> None:
    # Fixture finalizers normally stop everything; this covers interpreters that
    # exit without running them (an exception in pytest itself, a bare script).
    for proc, spawner in list(_running.items()):
        if spawner != os.getpid():
            continue
        with contextlib.suppress(OSError):
            stop(proc, timeout=2.0)


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    proc: subprocess.Popen[bytes] | None,
    log_path: Path,
    timeout: float = 10.0,
    interval: float = 0.01,
) -> None:
    """Poll `ready` until it returns True.

    Raises:
        ServiceError: `proc` exited first, or `timeout` seconds passed; the message
            carries the tail of `log_path`.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                f"{what} exited with status {proc.returncode} while starting; "
                f"its log ({log_path}) ends with:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{what} was not ready after {timeout:.0f} s; "
                f"its log ({log_path}) ends with:\n{log_tail(log_path)}"
            )
        time.sleep(interval)
