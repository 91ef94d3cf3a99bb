"""When a Graph or EWS sync trusts the folder list an earlier sync kept in its cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.sync.folders import FOLDER_LIST_KEPT, folder_listing, kept_listing

SKIP = ("sent", "drafts", "trash", "junk")
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def test_a_list_made_within_the_time_is_trusted_and_an_older_one_is_not() -> None:
    listing = folder_listing(["inbox-id", "archive-id"], SKIP, NOW)
    assert kept_listing(listing, SKIP, NOW) == ["inbox-id", "archive-id"]
    almost = NOW + FOLDER_LIST_KEPT - timedelta(seconds=1)
    assert kept_listing(listing, SKIP, almost) == ["inbox-id", "archive-id"]
    assert kept_listing(listing, SKIP, NOW + FOLDER_LIST_KEPT) is None


def test_a_list_for_another_skip_list_or_from_the_future_is_not_trusted() -> None:
    listing = folder_listing(["inbox-id"], SKIP, NOW)
    assert kept_listing(listing, (*SKIP, "Customers"), NOW) is None
    assert kept_listing(listing, SKIP, NOW - timedelta(seconds=1)) is None  # a clock set back


@pytest.mark.parametrize(
    "listing",
    [
        None,
        [],
        "inbox-id",
        {"ids": ["inbox-id"], "skip": list(SKIP)},
        {"ids": [], "skip": list(SKIP), "at": NOW.isoformat()},
        {"ids": ["inbox-id", ""], "skip": list(SKIP), "at": NOW.isoformat()},
        {"ids": ["inbox-id", 7], "skip": list(SKIP), "at": NOW.isoformat()},
        {"ids": "inbox-id", "skip": list(SKIP), "at": NOW.isoformat()},
        {"ids": ["inbox-id"], "skip": list(SKIP), "at": "yesterday"},
        {"ids": ["inbox-id"], "skip": list(SKIP), "at": NOW.replace(tzinfo=None).isoformat()},
        {"ids": ["inbox-id"], "skip": list(SKIP), "at": 1765101600},
    ],
)
def test_a_malformed_listing_means_listing_again(listing: object) -> None:
    assert kept_listing(listing, SKIP, NOW) is None
