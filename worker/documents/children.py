"""Starting the sandbox children the one way they are ever started.

    python -m worker.documents.sandbox ARGS...    (PDF: inspect, render, scrub)
    python -m worker.documents.links ARGS...      (Office package: links cut)
        environment: PATH, HOME/TMPDIR in the job's folder, LANG, PYTHONPATH — no secrets
        in its own process group (the caller's killpg reaches its forked renderers)
        in a private filesystem view with no network where the machine allows it
          (`worker.documents.isolation`): the system, Python and its packages, our
          code (core/, worker/), the job's folder — not var/, the storage folder,
          the rest of the app's folder; else in a network namespace where one works

MuPDF has no network code (libmupdf links no socket call) and opens no file a
PDF names (an external stream, /F, reads as empty), and lxml here loads no DTD
and no network resource; so the sandbox is never refused for want of
isolation, even when LibreOffice would be (``required``); where it works it
gets it anyway, in case a hostile file takes over the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from config import get_settings
from config.settings import PROJECT_ROOT
from worker.documents.convert import bare_environment, stop_group
from worker.documents.isolation import View, isolate, system_paths

# Our packages the sandbox imports (sandbox -> pdf_active, links -> core.documents.findings).
CODE = ("worker", "core")


SANDBOX = "worker.documents.sandbox"
LINKS = "worker.documents.links"


def sandbox_command(*args: str, module: str = SANDBOX) -> list[str]:
    return [sys.executable, "-m", module, *args]


@lru_cache(maxsize=1)
def python_paths() -> tuple[Path, ...]:
    """Python and its packages as this process finds them, and our code: the sandbox's reads."""
    prefixes = {Path(os.path.realpath(p)) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix)}
    found = {*prefixes, Path(sys.prefix)}  # a virtualenv: its folder, with its symlinks
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        inside_app = path == PROJECT_ROOT or PROJECT_ROOT in path.parents
        if not path.is_dir() or path in PROJECT_ROOT.parents:
            continue
        # Of the app's own folder, only the virtualenv and our code (below), never var/.
        if not inside_app or any(path == p or p in path.parents for p in prefixes):
            found.add(path)
    found |= {PROJECT_ROOT / name for name in CODE}
    return tuple(sorted(found))


def _mode(setting: str) -> str:
    """The sandbox is isolated where possible and never refused for want of it."""
    return "off" if setting == "off" else "auto"


def spawn_sandbox(
    folder: Path, args: list[str], stderr: IO[bytes], *, module: str = SANDBOX
) -> subprocess.Popen[bytes]:
    """Start the sandbox `module` with `args`; its stdout is a pipe of JSON lines."""
    home = folder / "sandbox-home"
    home.mkdir(exist_ok=True)
    environment = bare_environment(home)
    environment["PYTHONPATH"] = str(PROJECT_ROOT)
    settings = get_settings().documents
    view = View(read=(*system_paths(), *python_paths()), write=(folder,), cwd=PROJECT_ROOT)
    command = isolate(
        sandbox_command(*args, module=module),
        network=_mode(settings.network_isolation),
        files=_mode(settings.file_isolation),
        view=view,
    )
    return subprocess.Popen(  # noqa: S603 - our own module with plain arguments
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=environment,
        cwd=PROJECT_ROOT,
        process_group=0,
    )


def run_sandbox(
    folder: Path, args: list[str], key: str, timeout: float, *, module: str = SANDBOX
) -> dict[str, Any]:
    """Run a sandbox `module` with `args`; its one JSON line's `key` entry, or ok=false with why."""
    errors = folder / f"sandbox-{key}.err"
    with errors.open("wb") as stderr:
        process = spawn_sandbox(folder, args, stderr, module=module)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        return {"ok": False, "detail": f"took longer than {timeout:g} s"}
    for line in output.decode("utf-8", "replace").splitlines():
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and isinstance(answer.get(key), dict):
            return dict(answer[key])
    tail = errors.read_bytes()[-300:].decode("utf-8", "replace")
    return {"ok": False, "detail": f"exit status {process.returncode}: {tail}"}
