"""What the send window costs a claim: the next opening and a zone guess, in microseconds.

Reproduce: `python -m bench.send_windows` (or `--runs 50000`). Pure CPU, no
services: `core.zones.windows.next_opening` inside the window (the usual claim),
on a Friday night across a DST change (the longest ordinary search), across a
year end with a week of holidays, and `core.zones.inference.infer` from a
Salesforce address. Prints the mean per call; asserts nothing.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from core.zones.inference import infer
from core.zones.windows import SendWindow, next_opening

BERLIN = ZoneInfo("Europe/Berlin")


def cases() -> list[tuple[str, Callable[[], object]]]:
    default = SendWindow()
    holidays = SendWindow(
        holidays=frozenset(date(2026, 12, 24) + timedelta(days=d) for d in range(9))
    )
    inside = datetime(2027, 3, 3, 10, 0, tzinfo=UTC)
    friday_night = datetime(2027, 3, 26, 22, 0, tzinfo=UTC)
    christmas_eve = datetime(2026, 12, 23, 19, 0, tzinfo=UTC)
    return [
        ("next_opening, inside the window", lambda: next_opening(inside, BERLIN, default)),
        (
            "next_opening, Friday night over DST",
            lambda: next_opening(friday_night, BERLIN, default),
        ),
        (
            "next_opening, year end, 9 holidays",
            lambda: next_opening(christmas_eve, BERLIN, holidays),
        ),
        ("infer from a Salesforce address", lambda: infer(email=None, country="USA", state="TX")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20000)
    args = parser.parse_args()
    for label, call in cases():
        seconds = timeit.timeit(call, number=args.runs) / args.runs
        print(f"{label:40} {seconds * 1e6:8.1f} µs")


if __name__ == "__main__":
    main()
