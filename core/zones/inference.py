"""A prospect's time zone, guessed from what we know of them, and said with its source.

Order (first that answers wins): the zone a person set; the Salesforce
Contact's or Lead's address (state where the state decides, else the country);
the phone number's E.164 country code; the email domain's country code (never a
generic TLD, nor a country code used as one: .io, .co, .ai ...); else the
sequence's default. A country with several zones and no state to decide gives
its most populous zone, and the note says "guessed".

`ZoneGuess.note` is what the pages show after the zone:
"Europe/Berlin — from the email domain .de".
Pure: no I/O, no database; the tables are in `core.zones.tables`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from core.zones.tables import COUNTRIES, GENERIC_CCTLDS, STATES

SOURCES = ("set", "salesforce", "phone", "domain", "sequence default")


@dataclass(frozen=True)
class ZoneGuess:
    zone: str
    source: str  # one of SOURCES
    note: str  # "the email domain .de", "Salesforce address: Texas, US"


@dataclass(frozen=True)
class _Country:
    code: str
    zone: str
    guessed: bool
    calling: str | None


@lru_cache(maxsize=1)
def _countries() -> tuple[dict[str, _Country], dict[str, str]]:
    by_code: dict[str, _Country] = {}
    by_name: dict[str, str] = {}
    for line in COUNTRIES.strip().splitlines():
        code, zone, calling, names = line.split(" ", 3)
        guessed = zone.startswith("~")
        by_code[code] = _Country(
            code, zone.lstrip("~"), guessed, None if calling == "-" else calling
        )
        by_name[code.lower()] = code
        for name in names.split("|"):
            by_name[name.strip().lower()] = code
    return by_code, by_name


@lru_cache(maxsize=1)
def _states() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for country, lines in STATES.items():
        names: dict[str, str] = {}
        for line in lines.strip().splitlines():
            keys, zone = line.rsplit(" ", 1)
            for key in keys.split("|"):
                names[key.strip().lower()] = zone
        table[country] = names
    return table


@lru_cache(maxsize=1)
def _calling_codes() -> dict[str, str]:
    by_code, _ = _countries()
    return {c.calling: c.code for c in by_code.values() if c.calling}


def country_code(text: str | None) -> str | None:
    """ISO code for a free-text country ("Deutschland", "USA", "de"), or None."""
    if not text:
        return None
    return _countries()[1].get(" ".join(text.split()).lower().rstrip("."))


def from_address(
    country: str | None, state: str | None, city: str | None = None
) -> ZoneGuess | None:
    """The zone of a Salesforce address (MailingCountry/State/City or Country/State/City)."""
    code = country_code(country)
    state_key = " ".join((state or "").split()).lower().rstrip(".")
    if code is None and state_key:
        # "Texas" with no country: a US or Canadian state name alone is clear enough.
        for candidate in ("US", "CA", "AU"):
            if len(state_key) > 3 and state_key in _states()[candidate]:
                code = candidate
                break
    if code is None:
        return None
    place = ", ".join(p for p in (city, state, code) if p)
    zone = _states().get(code, {}).get(state_key)
    if zone:
        return ZoneGuess(zone, "salesforce", f"Salesforce address: {place}")
    entry = _countries()[0][code]
    if entry.guessed:
        return ZoneGuess(entry.zone, "salesforce", f"Salesforce address: {place} (guessed)")
    return ZoneGuess(entry.zone, "salesforce", f"Salesforce address: {place}")


_PHONE_JUNK = re.compile(r"[\s().\-/]")


def from_phone(phone: str | None) -> ZoneGuess | None:
    """The zone of an international number (+49 30 ..., 0049 ...); None for a national one."""
    if not phone:
        return None
    digits = _PHONE_JUNK.sub("", phone.strip())
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not digits.startswith("+") or not digits[1:].isdigit() or len(digits) < 8:
        return None
    codes = _calling_codes()
    for length in (3, 2, 1):
        prefix = digits[1 : 1 + length]
        if prefix in codes:
            entry = _countries()[0][codes[prefix]]
            guessed = " (guessed)" if entry.guessed or prefix in ("1", "7") else ""
            return ZoneGuess(entry.zone, "phone", f"the phone number's code +{prefix}{guessed}")
    return None


def from_domain(email: str | None) -> ZoneGuess | None:
    """The zone of the email domain's country code (.de, .co.uk); never a generic TLD."""
    if not email or "@" not in email:
        return None
    tld = email.rsplit("@", 1)[1].rstrip(".").rsplit(".", 1)[-1].lower()
    if len(tld) != 2 or tld in GENERIC_CCTLDS:
        return None
    code = "GB" if tld == "uk" else tld.upper()
    entry = _countries()[0].get(code)
    if entry is None:
        return None
    guessed = " (guessed)" if entry.guessed else ""
    return ZoneGuess(entry.zone, "domain", f"the email domain .{tld}{guessed}")


def infer(
    *,
    email: str | None,
    phone: str | None = None,
    country: str | None = None,
    state: str | None = None,
    city: str | None = None,
) -> ZoneGuess | None:
    """The best guess from an address, then a phone, then the domain; None if nothing tells."""
    return from_address(country, state, city) or from_phone(phone) or from_domain(email)


def describe(zone: str | None, source: str | None, note: str | None, default: str) -> str:
    """What a page shows: 'Europe/Berlin — from the email domain .de'."""
    if not zone or not source:
        return f"{default} — the sequence's default"
    if source == "set":
        return f"{zone} — set by hand"
    return f"{zone} — from {note or source}"
