"""Sightline's own processes, started from the Procfile exactly as a deployment runs them.

Tests use this to run real `worker`, `cron` and `listener` processes against the
test services, kill them the way a dyno dies (SIGKILL to the whole process group:
an RQ worker *and* its work horse), and restart them.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.services import process

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def procfile() -> dict[str, list[str]]:
    commands = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() and command.strip():
            commands[name.strip()] = shlex.split(command.strip())
    return commands


class Stack:
    """A set of Procfile processes sharing one environment and a log folder."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            **env,
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.commands = procfile()
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *names: str) -> Stack:
        for name in names:
            self.running[name] = process.spawn(
                self.commands[name], log_path=self.log_dir / f"{name}.log", env=self.env, cwd=ROOT
            )
        return self

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children, as when a dyno is lost."""
        proc = self.running.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def stop(self) -> None:
        for proc in self.running.values():
            process.stop(proc)
        self.running.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{process.log_tail(p, 60)}"
            for p in sorted(self.log_dir.glob("*.log"))
        )

    def wait_for(
        self, what: str, check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1
    ) -> T:
        """Poll `check` until it returns something truthy; fail with the processes' logs."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            for name, proc in self.running.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{name} exited ({proc.returncode}) while waiting for {what}\n{self.logs()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}"
                )
            time.sleep(interval)
