"""When a sync trusts the folder list kept in its cursor, and when freshness does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.sync.folders import (
    FOLDER_LIST_KEPT,
    folder_listing,
    kept_listing,
    listed_at,
    without_listing,
)

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


def listed_cursor(ids: list[str], states: dict[str, Any]) -> dict[str, Any]:
    return {"folders": states, "well_known": {}, "listing": folder_listing(ids, SKIP, NOW)}


def test_a_list_is_proof_of_freshness_only_once_every_folder_on_it_was_read() -> None:
    read = {"inbox-id": {"sync_state": "a"}, "customers-id": {"sync_state": "b"}}
    assert listed_at(listed_cursor(["inbox-id", "customers-id"], read)) == NOW
    # A sync listed, then failed before it read the folder it found: no proof.
    unread = {"inbox-id": {"sync_state": "a"}}
    assert listed_at(listed_cursor(["inbox-id", "customers-id"], unread)) is None
    # IMAP's cursor names folders; Sent read for an add-on's draft is no matter.
    imap = {"shape": "folders", **listed_cursor(["INBOX"], {"INBOX": {"last_uid": 3}})}
    assert listed_at(imap) == NOW


@pytest.mark.parametrize(
    "cursor",
    [
        None,
        {},
        {"INBOX": {"last_uid": 3}},  # IMAP's flat cursor, before the list was kept
        {"history_id": "9", "listing": {"page_token": "x"}},  # Gmail's first listing
        {"folders": {"a": {}}, "listing": {"ids": ["a"], "at": "yesterday"}},
        {"folders": {"a": {}}, "listing": {"ids": ["a"], "at": "2026-12-07T10:00:00"}},  # naive
        {"folders": {"a": {}}, "listing": {"ids": "a", "at": NOW.isoformat()}},
        {"folders": {"a": {}}, "listing": {"ids": [7], "at": NOW.isoformat()}},
        {"folders": {"a": "x"}, "listing": {"ids": ["a"], "at": NOW.isoformat()}},
        {"folders": [], "listing": {"ids": ["a"], "at": NOW.isoformat()}},
    ],
)
def test_no_list_time_is_read_from_a_cursor_that_does_not_show_one(cursor: object) -> None:
    assert listed_at(cursor) is None


def test_dropping_the_list_keeps_the_folders_states() -> None:
    cursor = listed_cursor(["inbox-id"], {"inbox-id": {"sync_state": "a"}})
    assert without_listing(cursor) == {
        "folders": {"inbox-id": {"sync_state": "a"}},
        "well_known": {},
    }
    assert "listing" in cursor  # the stored cursor is not changed
    assert without_listing(None) is None
