"""Document settings: where trackable attachments' files live and how far one may go."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from config.settings.parsing import ConfigError, env_int, env_str


@dataclass(frozen=True)
class DocumentSettings:
    """Trackable attachments: where files live and how far a document may go.

    `storage` is "database" (the default: blobs in the database, which every
    process reaches, so it works on Heroku where web and worker dynos share no
    disk) or an absolute folder path (one machine only).
    """

    storage: str = "database"
    max_bytes: int = 50 * 1024 * 1024
    max_pages: int = 500
    convert_seconds: int = 120
    render_seconds: int = 600
    render_processes: int = 2
    # auto: LibreOffice runs with no network where a namespace can be made;
    # required: refuse to convert without one; off: never (worker.documents.isolation).
    network_isolation: str = "auto"
    # The same words for a private view of the filesystem (bubblewrap): LibreOffice
    # sees the system's programs and its own job folder, no data (isolation.py).
    file_isolation: str = "auto"


def read_documents(env: Mapping[str, str], var_dir: Path) -> DocumentSettings:
    raw = env_str(env, "SIGHTLINE_DOCUMENT_STORAGE") or "database"
    if raw == "filesystem":
        storage = str(var_dir / "documents")
    elif raw == "database" or raw.startswith("/"):
        storage = raw
    else:
        raise ConfigError(
            "SIGHTLINE_DOCUMENT_STORAGE: expected database, filesystem or an absolute "
            f"folder path, got {raw!r}"
        )
    return DocumentSettings(
        storage=storage,
        max_bytes=env_int(env, "SIGHTLINE_DOCUMENT_MAX_MB", 50, 1, 500) * 1024 * 1024,
        max_pages=env_int(env, "SIGHTLINE_DOCUMENT_MAX_PAGES", 500, 1, 5000),
        convert_seconds=env_int(env, "SIGHTLINE_DOCUMENT_CONVERT_SECONDS", 120, 5, 3600),
        render_seconds=env_int(env, "SIGHTLINE_DOCUMENT_RENDER_SECONDS", 600, 5, 7200),
        render_processes=env_int(env, "SIGHTLINE_DOCUMENT_RENDER_PROCESSES", 2, 1, 16),
        network_isolation=_isolation(env, "SIGHTLINE_DOCUMENT_NETWORK_ISOLATION"),
        file_isolation=_isolation(env, "SIGHTLINE_DOCUMENT_FILE_ISOLATION"),
    )


def _isolation(env: Mapping[str, str], name: str) -> str:
    raw = (env_str(env, name) or "auto").lower()
    if raw not in ("auto", "required", "off"):
        raise ConfigError(f"{name}: expected auto, required or off, got {raw!r}")
    return raw
