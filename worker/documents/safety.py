"""Refusing a ZIP-based Office file that expands to something enormous (a zip bomb).

Checked before LibreOffice ever opens the file. The central directory's
declared sizes come first (cheap, and catches honest bombs), then every entry
is actually decompressed with a running byte count, because a hostile file can
declare small sizes and still expand without end: we stop at the limit.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 300 * 1024 * 1024
# Real XML compresses 10-20x; a ratio past this on a sizeable entry is a bomb.
MAX_RATIO = 200
RATIO_MIN_BYTES = 1024 * 1024
_READ = 1024 * 1024


class ArchiveRejectedError(ValueError):
    """The archive is unsafe to open; the message says why."""


@dataclass(frozen=True)
class ArchiveStats:
    entries: int
    expanded_bytes: int


def _mib(value: int) -> str:
    return f"{value / (1024 * 1024):,.0f} MB"


def check_archive(
    path: Path, *, max_entries: int = MAX_ENTRIES, max_total: int = MAX_TOTAL_BYTES
) -> ArchiveStats:
    """Raise ArchiveRejectedError unless the archive expands within the limits."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ArchiveRejectedError(f"the file is damaged ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise ArchiveRejectedError(
                f"it holds {len(infos):,} files; the most an Office document may hold is "
                f"{max_entries:,}"
            )
        declared = sum(info.file_size for info in infos)
        if declared > max_total:
            raise ArchiveRejectedError(
                f"it expands to {_mib(declared)} when unpacked; the limit is {_mib(max_total)}"
            )
        for info in infos:
            if info.file_size > RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(
                info.compress_size, 1
            ):
                ratio = info.file_size // max(info.compress_size, 1)
                raise ArchiveRejectedError(
                    f"one part ({info.filename}) expands {ratio:,} times its packed size, "
                    "which only a zip bomb does"
                )
        total = 0
        for info in infos:
            try:
                with archive.open(info) as entry:
                    while chunk := entry.read(_READ):
                        total += len(chunk)
                        if total > max_total:
                            raise ArchiveRejectedError(
                                f"it expands to more than {_mib(max_total)} when unpacked "
                                "(more than its directory declares)"
                            )
            except RuntimeError as exc:  # zipfile's "password required"
                raise ArchiveRejectedError(f"part {info.filename} is encrypted ({exc})") from None
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
                raise ArchiveRejectedError(f"part {info.filename} is damaged ({exc})") from None
    return ArchiveStats(entries=len(infos), expanded_bytes=total)
