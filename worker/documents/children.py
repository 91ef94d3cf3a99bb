"""Starting the sandbox child (`worker.documents.sandbox`) the one way it is ever started.

    python -m worker.documents.sandbox ARGS...
        environment: PATH, HOME/TMPDIR in the job's folder, LANG, PYTHONPATH — no secrets
        in its own process group (the caller's killpg reaches its forked renderers)
        in a network namespace where one is cheap to make (`worker.documents.isolation`)

MuPDF has no network code (libmupdf links no socket call), so the sandbox is
never refused for want of a namespace, even when LibreOffice would be
(``required``); where the namespace works it gets one anyway.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import IO

from config import get_settings
from config.settings import PROJECT_ROOT
from worker.documents.convert import bare_environment
from worker.documents.isolation import without_network


def sandbox_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker.documents.sandbox", *args]


def spawn_sandbox(folder: Path, args: list[str], stderr: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start the sandbox with `args`; its stdout is a pipe of JSON lines."""
    home = folder / "sandbox-home"
    home.mkdir(exist_ok=True)
    environment = bare_environment(home)
    environment["PYTHONPATH"] = str(PROJECT_ROOT)
    isolation = "off" if get_settings().documents.network_isolation == "off" else "auto"
    return subprocess.Popen(  # noqa: S603 - our own module with plain arguments
        without_network(sandbox_command(*args), isolation),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=environment,
        cwd=PROJECT_ROOT,
        process_group=0,
    )
