"""What a document reading visit says in the Live Feed, as it goes and once it is over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from web.feed import READING_SECONDS, _visit, document_sentence

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def words(page: int, read: int, seconds: int, seen_ago: float, ended: bool = False) -> str:
    last_seen = NOW - timedelta(seconds=seen_ago)
    visit = _visit((page, read, seconds * 1000, last_seen, last_seen if ended else None), NOW)
    document = {"name": "pricing.pdf", "pages": 12, "visit": visit}
    return document_sentence("document_view", "Dana", document)


def test_a_visit_going_on_says_where_the_reader_is() -> None:
    assert words(4, 3, 125, seen_ago=5) == "Dana is reading pricing.pdf — page 4 of 12, 2 min"
    assert (
        words(1, 1, 20, seen_ago=1) == "Dana is reading pricing.pdf — page 1 of 12, under a minute"
    )


def test_a_visit_over_says_how_much_was_read() -> None:
    assert (
        words(9, 7, 290, seen_ago=2, ended=True) == "Dana read pricing.pdf — 7 of 12 pages, 5 min"
    )
    # No last word from the viewer: over once READING_SECONDS pass without a beacon.
    assert words(9, 7, 290, seen_ago=READING_SECONDS + 1).startswith("Dana read pricing.pdf")
    assert words(9, 7, 290, seen_ago=READING_SECONDS - 1).startswith("Dana is reading")


def test_a_visit_not_recorded_yet_says_opened() -> None:
    document = {"name": "pricing.pdf", "pages": 12, "visit": None}
    assert document_sentence("document_view", "Dana", document) == "Dana opened pricing.pdf"
