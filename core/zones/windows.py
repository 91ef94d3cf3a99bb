"""Send windows: when a sequence may send to a prospect, in the prospect's zone.

A window is a set of weekdays, a local start and end time ([start, end), the end
after the start: no overnight windows) and holiday dates on which nothing goes
out. `next_opening(now, zone, window)` is `now` itself inside the window, else
the next local start time on an open day, as a UTC instant.

Local times become instants here only, by these rules (tested in
tests/unit/test_send_windows.py with fixed dates):

- a start time the clocks skip that day (02:30 on a spring-forward night) opens
  the window when the clocks jump past it (03:00 local);
- a time that occurs twice (an autumn night's repeated hour) opens at its first
  occurrence and closes at its second, so the window is never shorter than asked;
- days are counted on the prospect's calendar, so a Friday 23:00 is followed by
  Monday 08:00 there whatever the UTC date, and a year end is just another day.

Must never: return an instant before `now`, or loop for ever (a window with no
open day is refused when it is made: `SendWindow.check`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
WORKDAYS = 0b0011111  # Mon..Fri, bit 0 = Monday
DEFAULT_START = 8 * 60  # minutes after local midnight
DEFAULT_END = 18 * 60
HOLIDAY_LIMIT = 366
# Long enough to step over a year of holidays on top of the closed weekdays.
_SEARCH_DAYS = 7 * (HOLIDAY_LIMIT + 7)


class WindowError(ValueError):
    """A send window that cannot be used (the message says why)."""


@dataclass(frozen=True)
class SendWindow:
    days: int = WORKDAYS  # bit n set: weekday n (Monday = 0) is open
    start_minute: int = DEFAULT_START
    end_minute: int = DEFAULT_END
    holidays: frozenset[date] = field(default_factory=frozenset)

    def check(self) -> SendWindow:
        """Self, or WindowError naming what is wrong."""
        if not self.days & 0b1111111 or self.days & ~0b1111111:
            raise WindowError("send window: choose at least one day of the week")
        if not 0 <= self.start_minute < 24 * 60 or not 0 < self.end_minute <= 24 * 60:
            raise WindowError("send window: times must be between 00:00 and 24:00")
        if self.end_minute <= self.start_minute:
            raise WindowError(
                f"send window: the end ({minute_text(self.end_minute)}) must be after "
                f"the start ({minute_text(self.start_minute)})"
            )
        if len(self.holidays) > HOLIDAY_LIMIT:
            raise WindowError(f"send window: at most {HOLIDAY_LIMIT} holidays")
        return self

    def is_open_day(self, day: date) -> bool:
        return bool(self.days >> day.weekday() & 1) and day not in self.holidays

    def describe(self) -> str:
        """'Mon-Fri 08:00-18:00' (plus the number of holidays, if any)."""
        hours = f"{minute_text(self.start_minute)}-{minute_text(self.end_minute)}"
        text = f"{days_text(self.days)} {hours}"
        if self.holidays:
            count = len(self.holidays)
            text += f", {count} holiday{'s' if count != 1 else ''}"
        return text


def minute_text(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def days_text(days: int) -> str:
    """'Mon-Fri', 'Mon, Wed, Fri', 'every day'."""
    open_days = [i for i in range(7) if days >> i & 1]
    if len(open_days) == 7:
        return "every day"
    if len(open_days) > 2 and open_days == list(range(open_days[0], open_days[-1] + 1)):
        return f"{DAY_NAMES[open_days[0]]}-{DAY_NAMES[open_days[-1]]}"
    return ", ".join(DAY_NAMES[i] for i in open_days)


def local_instant(day: date, minute: int, tz: ZoneInfo, *, last: bool = False) -> datetime:
    """The UTC instant the clock in `tz` reads `minute` after midnight on `day`.

    A skipped time gives the moment the clocks jump past it; a repeated time its
    first occurrence, or its second with `last`. Minute 1440 is the next midnight.
    """
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    candidate = wall.replace(tzinfo=tz, fold=1 if last else 0)
    instant = candidate.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # Skipped: the jump is between the two readings of the gap; find it to the minute.
    early = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    late = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    low, high = min(early, late), max(early, late)
    while high - low > timedelta(minutes=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return high.replace(second=0, microsecond=0)


def next_opening(now: datetime, tz: ZoneInfo, window: SendWindow) -> datetime:
    """`now` if the window is open then, else when it next opens (UTC, never before now)."""
    if now.tzinfo is None:
        raise ValueError("next_opening needs an aware datetime")
    today = now.astimezone(tz).date()
    # From yesterday: in a zone behind UTC, a window still open "yesterday" there counts.
    for offset in range(-1, _SEARCH_DAYS):
        day = today + timedelta(days=offset)
        if not window.is_open_day(day):
            continue
        start = local_instant(day, window.start_minute, tz)
        end = local_instant(day, window.end_minute, tz, last=True)
        if now < start:
            return start
        if now < end:
            return now.astimezone(UTC)
    raise WindowError("send window never opens (no open day within the search range)")


def morning_of(day: date, tz: ZoneInfo, window: SendWindow, hour: int = 8) -> datetime:
    """`hour`:00 local on `day`, or the window's next opening after it (UTC)."""
    return next_opening(local_instant(day, hour * 60, tz), tz, window)
