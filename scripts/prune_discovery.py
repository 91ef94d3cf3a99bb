"""Delete the Google API discovery documents Sightline never reads.

google-api-python-client 2.x ships the discovery document of every public
Google API (over 600 files, 110 MB installed; its maintainers track the size in
googleapis/google-api-python-client#1967 and #2321). Sightline builds one
service from them, Gmail v1 (`worker.sync.gmail_api`, `static_discovery=True`),
so the rest is dead weight in every venv, slug and image. `make setup` runs this
after installing the lock, and so do Heroku's build (`bin/post_compile`) and
Dockerfile.documents. The library itself is untouched.

Run:  python scripts/prune_discovery.py     (prints what it kept and freed)
"""

from __future__ import annotations

import sys
from pathlib import Path

import googleapiclient

# The discovery documents `googleapiclient.discovery.build` reads for us.
KEEP = frozenset({"gmail.v1.json"})


def documents_dir() -> Path:
    """Where the installed library keeps its discovery documents."""
    return Path(googleapiclient.__file__).resolve().parent / "discovery_cache" / "documents"


def prune(folder: Path) -> tuple[int, int]:
    """Delete every document in ``folder`` except KEEP; (files deleted, bytes freed)."""
    missing = [name for name in KEEP if not (folder / name).is_file()]
    if missing:
        raise SystemExit(f"prune_discovery: {', '.join(missing)} not found in {folder}")
    deleted = freed = 0
    for path in folder.glob("*.json"):
        if path.name not in KEEP:
            freed += path.stat().st_size
            path.unlink()
            deleted += 1
    return deleted, freed


def main() -> int:
    folder = documents_dir()
    deleted, freed = prune(folder)
    print(
        f"prune_discovery: kept {', '.join(sorted(KEEP))}; deleted {deleted} other documents"
        f" ({freed / 1e6:.0f} MB) from {folder}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
