"""What `make run` runs: one command that starts everything and stops everything.

    make run ──▶ python -m core.localrun
      1. the embedded redis-server, a foreground child (REDIS_URL unset; a server
         already answering on its socket is used and left alone: `make stop`)
      2. the Procfile's `release` (alembic upgrade head); its output shown if it fails
      3. every other Procfile process, under honcho's Manager (each in its own session)
      4. "Sightline is running: open http://localhost:PORT" once GET /healthz answers
      ── Ctrl-C, SIGTERM, or any process exiting (a crash on start included) ──
      5. honcho sends SIGTERM to each process's group; what is still running in
         their sessions 10 s later (a work horse, a stuck job) is SIGKILLed
      6. Redis last (SHUTDOWN: its AOF flushed), so nothing is left running

One web port. honcho's own command line gives each process its own PORT (web
5000, the next 5100 ...), and PUBLIC_BASE_URL defaults to http://localhost:PORT:
outside web that pointed every pixel, click and document link of a sent email
where nothing listens. Here every process gets the web's PORT and the one
PUBLIC_BASE_URL the settings give this process.

Redis goes last because the processes need it to stop cleanly (RQ deregisters
its workers, the events consumer acknowledges what it stored). In a session of
its own, it does not get the Ctrl-C the terminal sends to make's process group.
If it dies while the processes run, they are stopped: one of them starting
again would otherwise start a daemonised server of its own (core.redis).

Console. Until web answers, the processes' lines are held back, so the banner
is the first line; they follow it, each with the time it was printed. If a
process stops first, they are printed at once (why it stopped is among them).
honcho's "started (pid=…)" and "sending SIGTERM" lines show at DEBUG only,
gunicorn's start and stop lines too (`--log-level`), and RQ's job chatter is
DEBUG in every process (config/logging.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

from honcho.environ import parse_procfile
from honcho.manager import Manager
from honcho.printer import Printer

from config import ConfigError, Settings, get_settings
from config.logging import configure_logging
from config.settings import PROJECT_ROOT
from core.redis import EmbeddedRedisError, run_embedded_server, stop_child_server

READY_TIMEOUT_SECONDS = 120
STOPPED_ON_REQUEST = (130, 143)  # honcho's Manager after SIGINT, SIGTERM
# rq's HerokuWorker gives a running job 6 s after SIGTERM; gunicorn's workers 20 s at most.
STRAGGLER_GRACE_SECONDS = 10
# gunicorn logs starting, booting, signals and shutting down at INFO; its errors
# (a worker that fails to boot, a timeout) at ERROR and above.
GUNICORN_LOG_LEVELS = {"DEBUG": "info", "INFO": "warning", "WARNING": "warning", "ERROR": "error"}


def banner(settings: Settings) -> str:
    return f"Sightline is running: open http://localhost:{settings.port}"


def process_environment(environ: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The environment every Procfile process gets: one PORT, one PUBLIC_BASE_URL."""
    env = dict(environ)
    # The Procfile names `gunicorn`, `rq` and `python`: this venv's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    env["PORT"] = str(settings.port)
    env["PUBLIC_BASE_URL"] = settings.public_base_url
    env.setdefault("GUNICORN_CMD_ARGS", f"--log-level {GUNICORN_LOG_LEVELS[settings.log_level]}")
    return env


class ConsolePrinter(Printer):  # type: ignore[misc]
    """honcho's printer, holding the processes' lines back until the banner."""

    def __init__(self, output: IO[str], *, verbose: bool) -> None:
        super().__init__(output)
        self._lock = threading.Lock()
        self._held: list[Any] | None = []
        self._verbose = verbose
        # Each process honcho starts leads a session of its own: its pid is the session id.
        self.sessions: set[int] = set()

    def write(self, message: Any) -> None:
        with self._lock:
            if message.name == "system":  # honcho's own: started, stopped, signals
                if started := re.search(r" started \(pid=(\d+)\)", str(message.data)):
                    self.sessions.add(int(started.group(1)))
                routine = any(s in str(message.data) for s in (" started (pid=", "SIGTERM to"))
                if routine and not self._verbose:
                    return
                if " started (pid=" not in str(message.data):
                    self._release()  # something is stopping: show everything held now
            if self._held is not None:
                self._held.append(message)
            else:
                super().write(message)

    def announce(self, line: str) -> None:
        """Print `line`, then what was held; nothing if the lines are already flowing."""
        with self._lock:
            if self._held is None:
                return
            print(line, file=self.output, flush=True)
            self._release()

    def release(self) -> None:
        """Print what was held, without a banner (a process stopped before web answered)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        held, self._held = self._held or [], None
        for message in held:
            super().write(message)


def web_answers(port: int) -> bool:
    # No proxy: an http_proxy in the environment must not answer for localhost.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):  # not listening yet, or 503 while starting
        return False


def announce_when_ready(printer: ConsolePrinter, settings: Settings, done: threading.Event) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not done.wait(0.2):
        if web_answers(settings.port):
            printer.announce(banner(settings))
            return
        if time.monotonic() > deadline:
            printer.announce(
                f"web did not answer http://localhost:{settings.port}/healthz within "
                f"{READY_TIMEOUT_SECONDS} s; what the processes printed follows"
            )
            return


def stop_all_if_redis_dies(
    server: subprocess.Popen[bytes], settings: Settings, done: threading.Event
) -> None:
    server.wait()
    if not done.is_set():
        print(
            f"the embedded Redis stopped (exit {server.returncode}): stopping everything; "
            f"its log is {settings.var_dir / 'redis' / 'redis.log'}",
            flush=True,
        )
        # honcho's Manager stops everything on SIGTERM, from its own loop.
        os.kill(os.getpid(), signal.SIGTERM)


def session_members(sessions: set[int]) -> list[int]:
    """Live processes in these sessions (Linux's /proc; elsewhere none are found)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            state, _ppid, _group, session = (
                (entry / "stat").read_text().rpartition(")")[2].split()[:4]
            )
        except (OSError, ValueError):  # gone meanwhile
            continue
        if int(session) in sessions and state != "Z":
            found.append(int(entry.name))
    return found


def stop_stragglers(sessions: set[int]) -> None:
    """Wait for what honcho started and left behind, then SIGKILL it.

    honcho counts a process stopped when its shell (`/bin/sh -c …`) is, and the
    shell dies at once on SIGTERM while the program it started is still shutting
    down (the events consumer acknowledging, gunicorn's workers, an RQ work horse
    in a group of its own): `make run` must not return before them.
    """
    deadline = time.monotonic() + STRAGGLER_GRACE_SECONDS
    while left := session_members(sessions):
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline + 5:
                return  # unkillable (stuck in the kernel): nothing more to do
        time.sleep(0.1)


def run_release(command: str, env: dict[str, str], settings: Settings) -> int:
    # A Procfile line is a shell command line (Heroku runs it with a shell too).
    done = subprocess.run(  # noqa: S602
        command, shell=True, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode or settings.log_level == "DEBUG":
        sys.stdout.write(done.stdout + done.stderr)
    if done.returncode:
        print(f"release ({command}) failed with exit {done.returncode}", flush=True)
    return done.returncode


def run_processes(
    processes: Mapping[str, str],
    env: dict[str, str],
    settings: Settings,
    server: subprocess.Popen[bytes] | None,
) -> int:
    printer = ConsolePrinter(sys.stdout, verbose=settings.log_level == "DEBUG")
    manager = Manager(printer)
    for name, command in processes.items():
        manager.add_process(f"{name}.1", command, env=env, cwd=str(PROJECT_ROOT))
    done = threading.Event()
    threading.Thread(
        target=announce_when_ready, args=(printer, settings, done), daemon=True
    ).start()
    if server is not None:
        watch = (server, settings, done)
        threading.Thread(target=stop_all_if_redis_dies, args=watch, daemon=True).start()
    try:
        manager.loop()
    finally:
        done.set()
        printer.release()
        stop_stragglers(printer.sessions)
    if server is not None and server.poll() is not None:
        return 1
    # Stopped as asked (Ctrl-C, SIGTERM): a success, and make adds no "Error 130".
    return 0 if manager.returncode in STOPPED_ON_REQUEST else int(manager.returncode or 0)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    try:
        settings = get_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    configure_logging(settings)
    procfile = parse_procfile((PROJECT_ROOT / "Procfile").read_text()).processes
    env = process_environment(os.environ, settings)
    # Until honcho's Manager installs its own, SIGTERM (make passes it on) stops
    # this process through the `finally` below, like Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    redis_dir = settings.var_dir / "redis"
    server = None
    try:
        if settings.redis_embedded:
            server = run_embedded_server(redis_dir)
            if server is None:
                print(
                    f"an embedded Redis already answers on {redis_dir / 'redis.sock'}: "
                    "using it (`make stop` stops it)",
                    flush=True,
                )
        if "release" in procfile and run_release(procfile["release"], env, settings):
            return 1
        others = {name: command for name, command in procfile.items() if name != "release"}
        return run_processes(others, env, settings, server)
    except EmbeddedRedisError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # Stopping Redis must not be cut short by a second Ctrl-C.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if server is not None:
            stop_child_server(server, redis_dir)


if __name__ == "__main__":
    sys.exit(main())
