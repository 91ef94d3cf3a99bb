"""The send window and default time zone on a sequence's settings form: read, check, show.

What the form shows and reads, next to the name and the mailbox
(`web.app.sequences`): a default zone (an IANA name, for prospects whose own is
not known), the open days (checkboxes), the local start and end (HH:MM, the end
may be 24:00) and holidays (dates, one per line or comma-separated). A new
sequence starts at Mon-Fri 08:00-18:00 in UTC. Every problem is a field error
in words; nothing here raises to the page.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from flask import request

from core.models import Sequence
from core.zones.names import ZoneError, check_zone
from core.zones.windows import (
    DAY_NAMES,
    DEFAULT_END,
    DEFAULT_START,
    HOLIDAY_LIMIT,
    WORKDAYS,
    SendWindow,
    WindowError,
    minute_text,
)
from web.app.common import FormErrors, form_str
from worker.sequences.send_windows import window_of

DAY_KEYS = tuple(d.lower() for d in DAY_NAMES)
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def window_values(sequence: Sequence | None) -> dict[str, Any]:
    """What the form shows: the posted values after an error, else the sequence's (or defaults)."""
    if request.method == "POST":
        return {
            "time_zone": form_str("time_zone"),
            "days": [d for d in DAY_KEYS if d in request.form.getlist("send_days")],
            "start": form_str("send_start"),
            "end": form_str("send_end"),
            "holidays": form_str("holidays"),
        }
    days = sequence.send_days if sequence else WORKDAYS
    return {
        "time_zone": sequence.time_zone if sequence else "UTC",
        "days": [d for i, d in enumerate(DAY_KEYS) if days >> i & 1],
        "start": minute_text(sequence.send_start_minute if sequence else DEFAULT_START),
        "end": minute_text(sequence.send_end_minute if sequence else DEFAULT_END),
        "holidays": "\n".join(sequence.holidays or []) if sequence else "",
        "day_names": DAY_NAMES,
    }


def _minute(errors: FormErrors, name: str, label: str) -> int | None:
    raw = form_str(name)
    found = _CLOCK.match(raw)
    minute = int(found[1]) * 60 + int(found[2]) if found and int(found[2]) < 60 else None
    if minute is None or minute > 24 * 60:
        errors.add(name, f"{label}: give a time as HH:MM, 00:00 to 24:00 (“{raw}” given).")
        return None
    return minute


def _holidays(errors: FormErrors) -> frozenset[date]:
    found: set[date] = set()
    for part in re.split(r"[\s,;]+", form_str("holidays")):
        if not part:
            continue
        try:
            found.add(date.fromisoformat(part))
        except ValueError:
            errors.add("holidays", f"Holidays: “{part[:20]}” is not a date like 2027-12-24.")
            break
    if len(found) > HOLIDAY_LIMIT:
        errors.add("holidays", f"Holidays: at most {HOLIDAY_LIMIT} dates ({len(found)} given).")
    return frozenset(found)


def read_window(errors: FormErrors, sequence: Sequence | None) -> tuple[str, SendWindow] | None:
    """(default zone, window) from the posted form, or None with the problems in `errors`.

    A post without the window's fields (the form marks them with `send_window`)
    keeps the sequence's window, or gives a new one the default.
    """
    if "send_window" not in request.form:
        if sequence is None:
            return "UTC", SendWindow()
        return sequence.time_zone, window_of(sequence)
    zone = ""
    try:
        zone = check_zone(form_str("time_zone") or "UTC")
    except ZoneError as exc:
        errors.add("time_zone", f"Time zone: {exc}.")
    chosen = request.form.getlist("send_days")
    days = sum(1 << i for i, d in enumerate(DAY_KEYS) if d in chosen)
    if not days:
        errors.add("send_days", "Send on: choose at least one day of the week.")
    start = _minute(errors, "send_start", "From")
    end = _minute(errors, "send_end", "Until")
    holidays = _holidays(errors)
    if errors or start is None or end is None:
        return None
    try:
        window = SendWindow(days, start, end, holidays).check()
    except WindowError as exc:
        errors.add("send_end", f"Until: {str(exc).removeprefix('send window: ')}.")
        return None
    return zone, window


def apply_window(sequence: Sequence, zone: str, window: SendWindow) -> None:
    sequence.time_zone = zone
    sequence.send_days = window.days
    sequence.send_start_minute = window.start_minute
    sequence.send_end_minute = window.end_minute
    sequence.holidays = sorted(d.isoformat() for d in window.holidays) or None


def window_text(sequence: Sequence) -> str:
    """'Mon-Fri 08:00-18:00 in each prospect's zone (else Europe/Berlin)', or 'any time'."""
    window = window_of(sequence)
    if window.days == 0b1111111 and window.start_minute == 0 and window.end_minute == 24 * 60:
        hours = "any day, any hour" + (
            f" except {len(window.holidays)} holidays" if window.holidays else ""
        )
        return f"Sends {hours} (no send window)"
    return f"Sends {window.describe()} in each prospect's zone (else {sequence.time_zone})"
