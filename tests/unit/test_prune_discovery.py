"""The install keeps only the Google discovery documents we read, and Gmail still builds."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from worker.sync.gmail_api import users_resource

ROOT = Path(__file__).resolve().parents[2]


def _script() -> Any:
    """scripts/prune_discovery.py, loaded by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "prune_discovery", ROOT / "scripts/prune_discovery.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_prune = _script()
KEEP, documents_dir, prune = _prune.KEEP, _prune.documents_dir, _prune.prune


def test_the_gmail_service_builds_from_the_documents_kept() -> None:
    assert {p.name for p in documents_dir().glob("*.json")} >= KEEP
    resource = users_resource("https://gmail.example.invalid/")
    assert callable(resource.messages().list)


def test_make_setup_leaves_only_the_documents_we_read() -> None:
    if not (ROOT / ".venv" / ".runtime").is_file() or Path(sys.prefix) != ROOT / ".venv":
        pytest.skip("not running in the venv `make setup` built")
    assert {p.name for p in documents_dir().glob("*.json")} == KEEP


def test_prune_refuses_a_folder_without_what_it_must_keep(tmp_path: Path) -> None:
    (tmp_path / "drive.v3.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"gmail\.v1\.json not found"):
        prune(tmp_path)
    assert (tmp_path / "drive.v3.json").exists()


def test_prune_deletes_the_rest(tmp_path: Path) -> None:
    for name in ("gmail.v1.json", "drive.v3.json", "compute.v1.json"):
        (tmp_path / name).write_text("{}")
    assert prune(tmp_path) == (2, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["gmail.v1.json"]


def test_heroku_runs_it_after_installing() -> None:
    hook = ROOT / "bin" / "post_compile"
    assert "scripts/prune_discovery.py" in hook.read_text()
    assert subprocess.run(["bash", "-n", str(hook)], check=False).returncode == 0
