"""`make run` as a newcomer runs it: tracked links that work, a quiet console, a clean stop.

The README's quick start, from a shell that sets nothing: no PUBLIC_BASE_URL, no
REDIS_URL (so the embedded Redis), no DATABASE_URL (so an SQLite file). Only
SIGHTLINE_VAR_DIR points the local state (database, keys, Redis socket) at a
fresh folder, and SIGHTLINE_TRACKING_SCANNER_SECONDS=0 lets an open seconds after
the send count as a person's. PORT stays the README's 5000 when it is free.

- The first line is the banner; what one send prints at the default level is our
  own `sent` line, no RQ job chatter.
- The pixel in the email the prospect's Dovecot INBOX received points at the web
  port, and loading it records an open (honcho used to give every process its own
  PORT, and the worker that renders the email wrote http://localhost:5100/...).
- Ctrl-C (SIGINT to make's process group, as a terminal sends it) stops every
  process `make run` started, the embedded redis-server included; so does a
  process that dies on start (web on a port already taken).

A run takes about 30 s (start ~6 s, the send waits for the 10 s cron tick).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import requests

from tests.integration.test_core_loop import server
from tests.services.dovecot import DovecotServer, unique_address
from web.tracking.app import PIXEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131 Safari/537.36"
# What a newcomer's shell has; nothing of ours (tests/conftest.py sets its own), and
# no MAKEFLAGS/MAKELEVEL from a `make test` around this run.
KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ")

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float, run: MakeRun) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if run.make.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout} s; make run printed:\n{run.output()}")


class MakeRun:
    """`make run` in its own process group, its output read line by line."""

    def __init__(self, env: dict[str, str], var_dir: Path) -> None:
        self.lines: list[str] = []
        self.var_dir = var_dir
        self.make = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.make.stdout is not None
        for line in self.make.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def ctrl_c(self, timeout: float = 40) -> None:
        os.killpg(self.make.pid, signal.SIGINT)
        self.wait(timeout)

    def wait(self, timeout: float) -> None:
        try:
            self.make.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"make run still running {timeout} s later:\n{self.output()}"
            ) from None
        self._reader.join(5)

    def kill(self) -> None:
        """After a failure: stop what is left, even what an old `make run` leaves behind."""
        print(self.output())  # pytest shows it when the test fails
        if self.make.poll() is None:
            left = started_by(self.make.pid, self.var_dir)
            os.killpg(self.make.pid, signal.SIGINT)
            try:
                self.make.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.make.pid, signal.SIGKILL)
                self.make.wait()
        else:
            left = {}
        now = processes()
        for pid, (_, started, cmdline) in now.items():
            if left.get(pid, ("", ""))[0] == started or str(self.var_dir) in cmdline:
                os.kill(pid, signal.SIGKILL)


def processes() -> dict[int, tuple[int, str, str]]:
    """pid → (parent pid, start time, command line) of every live process now.

    A zombie is not live: it has exited, and waits for its parent (here often a
    container's init, which may never reap it) to read its exit status."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] != "Z":
            found[int(entry.name)] = (int(fields[1]), fields[19], cmdline)
    return found


def started_by(root: int, var_dir: Path) -> dict[int, tuple[str, str]]:
    """pid → (start time, command line) of root's descendants, and of anything serving
    var_dir (a daemonised redis-server is nobody's child)."""
    table = processes()
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent]
        tree.update(children)
        frontier += children
    return {
        pid: (started, cmdline)
        for pid, (_, started, cmdline) in table.items()
        if pid in tree or str(var_dir) in cmdline
    }


def still_running(before: dict[int, tuple[str, str]], var_dir: Path) -> list[str]:
    now = processes()
    left = [
        cmd for pid, (started, cmd) in before.items() if now.get(pid, (0, "", ""))[1] == started
    ]
    strays = [cmd for _, _, cmd in now.values() if str(var_dir) in cmd]
    return sorted(set(left + strays))


def redis_answers(var_dir: Path) -> bool:
    sock = var_dir / "redis" / "redis.sock"
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As gunicorn binds: a port whose last connection is in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


@pytest.fixture
def var_dir() -> Iterator[Path]:
    # Short: the Redis socket's path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="sl-run-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def newcomer_env(var_dir: Path, port: int | None) -> dict[str, str]:
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env["SIGHTLINE_VAR_DIR"] = str(var_dir)
    env["SIGHTLINE_TRACKING_SCANNER_SECONDS"] = "0"
    if port is not None:
        env["PORT"] = str(port)
    return env


def create_user(env: dict[str, str], email: str) -> str:
    created = subprocess.run(
        [
            *(str(ROOT / ".venv/bin/flask"), "--app", "web", "users", "create", email),
            *("--team", "Acme Sales", "--password", "a long passphrase for the newcomer check"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    return created.stdout.strip().splitlines()[-1]


def test_a_send_through_make_run_tracks_its_open_and_ctrl_c_stops_everything(
    var_dir: Path, dovecot: DovecotServer, smtp_server: Any
) -> None:
    # The README's default port when it is free (CI); another one otherwise.
    port = 5000 if port_free(5000) else None
    if port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = newcomer_env(var_dir, port)
    else:
        env = newcomer_env(var_dir, None)
    base = f"http://localhost:{port}"
    banner = f"Sightline is running: open {base}"
    run = MakeRun(env, var_dir)
    try:
        http = requests.Session()
        http.trust_env = False  # no proxy for localhost

        def web_answers() -> bool:
            try:
                return http.get(f"{base}/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_for("answer from web", web_answers, 120, run)
        token = create_user(env, unique_address("seller.test", "owner"))
        http.headers["Authorization"] = f"Bearer {token}"

        sender = unique_address("seller.test", "rep")
        prospect = unique_address("acme.test", "dana")
        mailbox = http.post(
            f"{base}/api/v1/mailboxes",
            json={
                "kind": "imap",
                "email": sender,
                "imap": server(dovecot.host, dovecot.imap_port, sender, dovecot.password),
                "smtp": server(smtp_server.host, smtp_server.port, sender, smtp_server.password),
            },
            timeout=30,
        )
        assert mailbox.status_code == 201, mailbox.text
        sequence = http.post(
            f"{base}/api/v1/sequences",
            json={
                "name": "Intro",
                "mailbox_id": mailbox.json()["id"],
                # About what is sent, not when: any day, any hour (default Mon-Fri 08-18).
                "send_window": {
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "start": "00:00",
                    "end": "24:00",
                },
                "steps": [
                    {
                        "delay_seconds": 0,
                        "subject": "Quick question, {{first_name}}",
                        "body_html": "<p>Hi {{first_name}}, a quick question.</p>",
                    }
                ],
            },
            timeout=10,
        )
        assert sequence.status_code == 201, sequence.text
        enrolled = http.post(
            f"{base}/api/v1/enrollments",
            json={"sequence_id": sequence.json()["id"], "email": prospect, "name": "Dana Scully"},
            timeout=10,
        )
        assert enrolled.status_code == 201, enrolled.text
        enrollment_id = enrolled.json()["id"]

        # The cron tick (every 10 s) sends it; the SMTP server delivers it to Dovecot.
        received = dovecot.wait_for_message(prospect, lambda m: True, timeout=45)
        html = received.get_body(preferencelist=("html",))
        assert html is not None
        pixels = re.findall(r'<img src="([^"]+/o/[^"]+\.gif)"', html.get_content())
        assert len(pixels) == 1, html.get_content()
        assert pixels[0].startswith(f"{base}/o/"), f"the pixel points elsewhere: {pixels[0]}"
        opened = http.get(pixels[0], headers={"User-Agent": CHROME}, timeout=10)
        assert (opened.status_code, opened.content) == (200, PIXEL)

        def kinds() -> set[str] | None:
            events = http.get(f"{base}/api/v1/events?enrollment_id={enrollment_id}", timeout=10)
            found = {e["kind"] for e in events.json()["events"]}
            return found if "open" in found else None

        assert wait_for("open event", kinds, 30, run) >= {"sent", "open"}

        assert run.lines[0] == banner, run.output()
        # One INFO line for the send, from the worker; none of RQ's per-job lines.
        wait_for("sent line", lambda: any(" sent sent_id=" in ln for ln in run.lines), 10, run)
        chatter = [ln for ln in run.lines if "logger=rq." in ln or "Job OK" in ln]
        assert not chatter, "\n".join(chatter[:20])

        before = started_by(run.make.pid, var_dir)
        assert any("redis-server" in cmd for _, cmd in before.values()), before
        run.ctrl_c()
        # Read before the clean-up below, which kills whatever is left.
        left, redis_left = still_running(before, var_dir), redis_answers(var_dir)
    finally:
        run.kill()
    assert left == [], run.output()
    assert not redis_left


def test_a_process_that_dies_on_start_stops_everything_with_it(var_dir: Path) -> None:
    # web cannot bind a port that is taken: gunicorn gives up, honcho stops the rest.
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = MakeRun(newcomer_env(var_dir, port), var_dir)
        before: dict[int, tuple[str, str]] = {}
        try:
            deadline = time.monotonic() + 90
            while run.make.poll() is None and time.monotonic() < deadline:
                before |= started_by(run.make.pid, var_dir)
                time.sleep(0.1)
            run.wait(1)
            left, redis_left = still_running(before, var_dir), redis_answers(var_dir)
        finally:
            run.kill()
    assert run.make.returncode != 0
    assert "Sightline is running" not in run.output()
    assert "Connection in use" in run.output()  # why web stopped is printed
    assert any("redis-server" in cmd for _, cmd in before.values()), before
    assert left == [], run.output()
    assert not redis_left


def test_sigterm_to_make_alone_stops_everything(var_dir: Path) -> None:
    # What an IDE, a process supervisor or `kill <make's pid>` sends: make passes it on.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = MakeRun(newcomer_env(var_dir, port), var_dir)
    try:
        banner = f"Sightline is running: open http://localhost:{port}"
        wait_for("banner", lambda: banner in run.lines, 120, run)
        before = started_by(run.make.pid, var_dir)
        os.kill(run.make.pid, signal.SIGTERM)
        run.wait(40)
        left, redis_left = still_running(before, var_dir), redis_answers(var_dir)
    finally:
        run.kill()
    assert any("redis-server" in cmd for _, cmd in before.values()), before
    assert left == [], run.output()
    assert not redis_left
