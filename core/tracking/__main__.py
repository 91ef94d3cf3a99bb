"""`python -m core.tracking refresh-ranges`: rewrite the IP range files from their sources.

Apple publishes iCloud Private Relay's egress ranges as CSV (``prefix,country,
region,city,...``); Microsoft publishes Microsoft 365's endpoints as JSON, where
Exchange Online Protection is the entry whose URLs include
``*.mail.protection.outlook.com`` (SMTP, TCP 25). Prefixes are collapsed before
they are written, each file gets its source and the fetch date, and a file is
replaced only when its source answered with at least one range, so a failed or
empty download never wipes the shipped data.
"""

from __future__ import annotations

import argparse
import csv
import io
import ipaddress
import sys
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from core.tracking.ranges import APPLE_FILE, DATA_DIR, EOP_FILE, Network, format_range_file

APPLE_URL = "https://mask-api.icloud.com/egress-ip-ranges.csv"
MICROSOFT_URL = "https://endpoints.office.com/endpoints/worldwide?ServiceAreas=Exchange"
EOP_HOST = "*.mail.protection.outlook.com"
TIMEOUT = 60


class RefreshError(RuntimeError):
    """A source could not be read; retrying later may help."""


def collapse(networks: Iterable[Network]) -> list[Network]:
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return [*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6)]


def parse_apple_csv(text: str) -> list[Network]:
    networks: list[Network] = []
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0].strip() or row[0].startswith("#"):
            continue
        try:
            networks.append(ipaddress.ip_network(row[0].strip(), strict=False))
        except ValueError:
            continue  # a header line or a malformed row: the rest is still good
    return collapse(networks)


def parse_microsoft_json(document: Any) -> list[Network]:
    networks: list[Network] = []
    if not isinstance(document, list):
        raise RefreshError("Microsoft endpoints: expected a JSON list")
    for entry in document:
        if not isinstance(entry, dict) or EOP_HOST not in (entry.get("urls") or []):
            continue
        for cidr in entry.get("ips") or []:
            try:
                networks.append(ipaddress.ip_network(str(cidr), strict=False))
            except ValueError:
                continue
    return collapse(networks)


def _get(url: str) -> requests.Response:
    try:
        response = requests.get(url, timeout=TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise RefreshError(f"{url}: {exc}") from exc
    return response


def _write(directory: Path, name: str, label: str, source: str, networks: list[Network]) -> None:
    if not networks:
        raise RefreshError(f"{source}: no ranges found; {name} left as it was")
    headers = {
        "label": label,
        "source": source,
        "fetched": datetime.now(UTC).strftime("%Y-%m-%d"),
        "note": "Refresh with: python -m core.tracking refresh-ranges",
    }
    tmp = directory / f".{name}.tmp"
    tmp.write_text(format_range_file(headers, networks), encoding="utf-8")
    tmp.replace(directory / name)
    print(f"ranges_written file={name} ranges={len(networks)}")


def refresh(apple_url: str, microsoft_url: str, directory: Path) -> int:
    """Refresh both files; returns how many failed."""
    failures = 0
    try:
        apple = parse_apple_csv(_get(apple_url).text)
        _write(directory, APPLE_FILE, "apple_proxy", apple_url, apple)
    except RefreshError as exc:
        print(f"ranges_failed file={APPLE_FILE} error={exc}", file=sys.stderr)
        failures += 1
    try:
        separator = "&" if "?" in microsoft_url else "?"
        url = f"{microsoft_url}{separator}clientrequestid={uuid.uuid4()}"
        eop = parse_microsoft_json(_get(url).json())
        _write(directory, EOP_FILE, "scanner", microsoft_url, eop)
    except (RefreshError, ValueError) as exc:
        print(f"ranges_failed file={EOP_FILE} error={exc}", file=sys.stderr)
        failures += 1
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.tracking")
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("refresh-ranges", help="rewrite core/data/*.txt from sources")
    command.add_argument("--apple-url", default=APPLE_URL)
    command.add_argument("--microsoft-url", default=MICROSOFT_URL)
    command.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    return 1 if refresh(args.apple_url, args.microsoft_url, args.data_dir) else 0


if __name__ == "__main__":
    sys.exit(main())
