"""IP range data files: who fetches images and links on a recipient's behalf.

Each file under `core/data/` is plain text: ``# key: value`` header lines
(``source``, ``fetched``, ``label``, ``note``), then one CIDR per line, with an
optional trailing ``# comment``. Files:

- ``apple_private_relay.txt`` — Apple's iCloud Private Relay egress ranges, which
  Mail Privacy Protection fetches images through (label ``apple_proxy``).
- ``microsoft_eop.txt`` — Exchange Online Protection / Defender for Office 365
  (label ``scanner``): it fetches images and follows links when mail arrives.

`RangeSet` answers "is this address in any range?" with a binary search over
merged integer intervals, so the full Apple list (tens of thousands of prefixes)
costs microseconds per hit. `python -m core.tracking refresh-ranges` rewrites the
files from their published sources (see `core.tracking.__main__`).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

APPLE_FILE = "apple_private_relay.txt"
EOP_FILE = "microsoft_eop.txt"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RangeFileError(ValueError):
    """A range file is malformed; the message names the file and line."""


@dataclass
class RangeSet:
    """Merged, sorted intervals per IP version, searched with bisect."""

    starts: dict[int, list[int]] = field(default_factory=lambda: {4: [], 6: []})
    ends: dict[int, list[int]] = field(default_factory=lambda: {4: [], 6: []})
    count: int = 0

    @classmethod
    def of(cls, networks: Iterable[Network]) -> RangeSet:
        ranges = cls()
        by_version: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for network in networks:
            by_version[network.version].append(
                (int(network.network_address), int(network.broadcast_address))
            )
            ranges.count += 1
        for version, intervals in by_version.items():
            intervals.sort()
            merged: list[list[int]] = []
            for start, end in intervals:
                if merged and start <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            ranges.starts[version] = [m[0] for m in merged]
            ranges.ends[version] = [m[1] for m in merged]
        return ranges

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        value = int(ip)
        starts = self.starts[ip.version]
        index = bisect.bisect_right(starts, value) - 1
        return index >= 0 and value <= self.ends[ip.version][index]


@dataclass(frozen=True)
class RangeFile:
    name: str
    headers: dict[str, str]
    networks: list[Network]

    @property
    def ranges(self) -> RangeSet:
        return RangeSet.of(self.networks)


def parse_range_file(name: str, text: str) -> RangeFile:
    headers: dict[str, str] = {}
    networks: list[Network] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, sep, value = stripped[1:].partition(":")
            if sep and key.strip().isidentifier() and not networks:
                headers.setdefault(key.strip().lower(), value.strip())
            continue
        cidr = stripped.split("#", 1)[0].strip()
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise RangeFileError(f"{name}:{number}: not an IP range: {cidr!r}") from None
    return RangeFile(name, headers, networks)


def format_range_file(headers: dict[str, str], networks: Iterable[Network]) -> str:
    lines = [f"# {key}: {value}" for key, value in headers.items()]
    ordered = sorted(networks, key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    return "\n".join([*lines, *(str(n) for n in ordered)]) + "\n"


def load_range_file(name: str, directory: Path = DATA_DIR) -> RangeFile:
    path = directory / name
    return parse_range_file(name, path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class KnownRanges:
    apple: RangeSet
    gateways: RangeSet


@lru_cache(maxsize=4)
def known_ranges(directory: Path = DATA_DIR) -> KnownRanges:
    """The shipped (or refreshed) ranges, parsed once per process."""
    return KnownRanges(
        apple=load_range_file(APPLE_FILE, directory).ranges,
        gateways=load_range_file(EOP_FILE, directory).ranges,
    )
