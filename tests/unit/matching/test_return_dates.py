"""Return dates in more languages and forms than the fixtures hold (sent 3 March 2027)."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.matching.return_dates import return_date

SENT = dt.date(2027, 3, 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I am out of the office until 15-Mar-2027.", "2027-03-15"),
        ("Я в отпуске до 15 марта.", "2027-03-15"),
        ("Ofis dışındayım, 15 Mart tarihinde döneceğim.", "2027-03-15"),  # noqa: RUF001 - Turkish
        ("Jsem mimo kancelář do 15. března.", "2027-03-15"),
        ("Szabadságon vagyok március 15-ig.", "2027-03-15"),
        ("Είμαι εκτός γραφείου έως 15 Μαρτίου.", "2027-03-15"),
        ("3월 15일까지 부재중입니다.", "2027-03-15"),
        ("I'll be back on the 15th.", "2027-03-15"),
        ("I'm back tomorrow.", "2027-03-04"),
        ("I will return on 2027.03.15", "2027-03-15"),
        ("I am on leave from 1 March to 12 March 2027 inclusive.", "2027-03-12"),
        ("On leave from 1 March, back on 12 March.", "2027-03-12"),
        ("I am away until Monday, March 15th.", "2027-03-15"),
        ("out until 15 March 2027 (back on 16 March)", "2027-03-16"),
        ("I will be out of the office until Friday.", "2027-03-05"),
        ("I am out of the office until next week.", None),
        ("Back on 2 January", None),  # two months ago: a stale notice, not next year
    ],
)
def test_return_date_in_other_languages_and_forms(text: str, expected: str | None) -> None:
    found = return_date(text, SENT)
    assert (found.isoformat() if found else None) == expected


def test_a_long_leave_ends_next_year() -> None:
    found = return_date("I am on parental leave until 15 March.", dt.date(2027, 8, 20))
    assert found == dt.date(2028, 3, 15)
