"""Time zone names: only IANA names the standard library's zoneinfo knows.

Must never: accept an abbreviation ("CET", "EST"), an offset ("+02:00") or a
file path; every answer for bad input is a `ZoneError` whose message a person
can act on (the API turns it into a 422, a form into a field error).
"""

from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

ZONE_NAME_LIMIT = 64
# Area/Location names only ("Europe/Berlin", "America/Argentina/Buenos_Aires") and UTC.
_SHAPE = re.compile(r"^(?:UTC|[A-Z][A-Za-z_]+(?:/[A-Za-z0-9_+\-]+){1,2})$")


class ZoneError(ValueError):
    """A time zone name we do not accept (the message says why and what would do)."""


@lru_cache(maxsize=1)
def _known() -> frozenset[str]:
    return frozenset(available_timezones())


def check_zone(name: str) -> str:
    """The canonical IANA name for `name`, or ZoneError.

    Case is forgiven ("europe/berlin" gives "Europe/Berlin"); nothing else is.
    """
    text = (name or "").strip()
    if not text:
        raise ZoneError("time zone is empty: give an IANA name such as Europe/Berlin")
    if len(text) > ZONE_NAME_LIMIT:
        raise ZoneError(f"time zone is too long (at most {ZONE_NAME_LIMIT} characters)")
    lowered = {z.lower(): z for z in _known()}
    canonical = text if text in _known() else lowered.get(text.lower())
    if canonical is None or not _SHAPE.match(canonical) or canonical.startswith("Etc/"):
        raise ZoneError(
            f"unknown time zone {text!r}: give an IANA name such as Europe/Berlin, "
            "America/New_York or UTC (not an abbreviation like CET or an offset)"
        )
    return canonical


def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for a name that passed `check_zone` (UTC for one that no longer does)."""
    try:
        return ZoneInfo(check_zone(name))
    except (ZoneError, ZoneInfoNotFoundError):
        return ZoneInfo("UTC")
