"""Send windows at the edges: DST gaps and repeats, weekends, holidays, a year end.

Fixed dates (2027's changes: Europe on 28 March and 31 October, the US on 14
March and 7 November); each expectation is the wall clock a person there sees.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from core.zones.windows import (
    SendWindow,
    WindowError,
    local_instant,
    morning_of,
    next_opening,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
DEFAULT = SendWindow()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_inside_the_window_is_now() -> None:
    now = utc(2027, 3, 3, 10, 15)  # Wednesday 11:15 in Berlin
    assert next_opening(now, BERLIN, DEFAULT) == now


def test_late_evening_waits_for_the_next_morning_there() -> None:
    # Wednesday 23:00 in Berlin (22:00 UTC) -> Thursday 08:00 CET = 07:00 UTC.
    assert next_opening(utc(2027, 3, 3, 22, 0), BERLIN, DEFAULT) == utc(2027, 3, 4, 7, 0)


def test_the_end_is_not_inside() -> None:
    # 18:00 sharp in Berlin: closed; the next morning.
    assert next_opening(utc(2027, 3, 3, 17, 0), BERLIN, DEFAULT) == utc(2027, 3, 4, 7, 0)


def test_friday_night_waits_for_monday_across_the_spring_change() -> None:
    # Friday 26 March 23:00 CET; clocks go forward on Sunday 28th: Monday 08:00 is CEST (+2).
    assert next_opening(utc(2027, 3, 26, 22, 0), BERLIN, DEFAULT) == utc(2027, 3, 29, 6, 0)


def test_friday_night_in_new_york_waits_for_monday_in_daylight_time() -> None:
    # Friday 12 March 23:00 EST (04:00 UTC Saturday) -> Monday 15th 08:00 EDT = 12:00 UTC.
    assert next_opening(utc(2027, 3, 13, 4, 0), NEW_YORK, DEFAULT) == utc(2027, 3, 15, 12, 0)


def test_autumn_change_monday_morning_in_standard_time() -> None:
    # Friday 5 November 2027 20:00 EDT -> Monday 8th 08:00 EST = 13:00 UTC.
    assert next_opening(utc(2027, 11, 6, 0, 0), NEW_YORK, DEFAULT) == utc(2027, 11, 8, 13, 0)


def test_a_start_the_clocks_skip_opens_when_they_jump() -> None:
    # 28 March 2027 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 never happens.
    assert local_instant(date(2027, 3, 28), 150, BERLIN) == utc(2027, 3, 28, 1, 0)
    every_day = SendWindow(days=0b1111111, start_minute=150, end_minute=300)
    opening = next_opening(utc(2027, 3, 27, 23, 0), BERLIN, every_day)
    assert opening == utc(2027, 3, 28, 1, 0)
    assert opening.astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_a_repeated_hour_opens_at_its_first_and_closes_at_its_second() -> None:
    # 31 October 2027 in Berlin: 02:00-03:00 happens twice (00:00-01:00 UTC CEST, 01:00-02:00 CET).
    window = SendWindow(days=0b1111111, start_minute=150, end_minute=155)
    first = next_opening(utc(2027, 10, 30, 23, 0), BERLIN, window)
    assert first == utc(2027, 10, 31, 0, 30)  # 02:30 CEST
    # Between the two 02:35s the window is still open: it closes at the second.
    assert next_opening(utc(2027, 10, 31, 1, 0), BERLIN, window) == utc(2027, 10, 31, 1, 0)
    assert next_opening(utc(2027, 10, 31, 1, 35), BERLIN, window) == utc(2027, 11, 1, 1, 30)


def test_holidays_and_the_year_end() -> None:
    window = SendWindow(holidays=frozenset({date(2027, 1, 1), date(2026, 12, 31)}))
    # Wednesday 30 December 2026 19:00 in Berlin: Thu 31st and Fri 1st are holidays,
    # then the weekend: Monday 4 January 2027 08:00 CET.
    assert next_opening(utc(2026, 12, 30, 18, 0), BERLIN, window) == utc(2027, 1, 4, 7, 0)


def test_the_prospects_calendar_decides_the_day() -> None:
    # Monday 07:30 in Sydney is still Sunday 20:30 UTC: Monday's window opens at 08:00 AEDT.
    assert next_opening(utc(2027, 1, 3, 20, 30), SYDNEY, DEFAULT) == utc(2027, 1, 3, 21, 0)
    # Friday 17:30 in New York is 22:30 UTC: still Friday's window there.
    friday_evening = utc(2027, 1, 8, 22, 30)
    assert next_opening(friday_evening, NEW_YORK, DEFAULT) == friday_evening
    # Saturday 01:00 UTC is Friday 20:00 there: closed until Monday 08:00 EST.
    assert next_opening(utc(2027, 1, 9, 1, 0), NEW_YORK, DEFAULT) == utc(2027, 1, 11, 13, 0)


def test_morning_of_a_saturday_return_is_monday() -> None:
    # Back on Saturday 6 March 2027: resumes Monday 8th 08:00 in Berlin.
    assert morning_of(date(2027, 3, 6), BERLIN, DEFAULT) == utc(2027, 3, 8, 7, 0)
    assert morning_of(date(2027, 3, 4), BERLIN, DEFAULT) == utc(2027, 3, 4, 7, 0)


@pytest.mark.parametrize(
    ("window", "words"),
    [
        (SendWindow(days=0), "at least one day"),
        (SendWindow(start_minute=600, end_minute=600), "must be after the start"),
        (SendWindow(start_minute=-1), "between 00:00 and 24:00"),
        (
            SendWindow(
                holidays=frozenset(date(2027, 1, d) for d in range(1, 32))
                | frozenset(date(2028, m, d) for m in range(1, 13) for d in range(1, 29))
            ),
            "at most 366 holidays",
        ),
    ],
)
def test_unusable_windows_are_refused_with_the_reason(window: SendWindow, words: str) -> None:
    with pytest.raises(WindowError, match=words):
        window.check()


def test_describe() -> None:
    assert SendWindow().describe() == "Mon-Fri 08:00-18:00"
    assert SendWindow(days=0b0010101, holidays=frozenset({date(2027, 1, 1)})).describe() == (
        "Mon, Wed, Fri 08:00-18:00, 1 holiday"
    )
