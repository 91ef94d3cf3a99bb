"""What an IMAP sync cursor says: its folders' states, and whether IDLE on INBOX sees them all.

Both shapes are stored: the flat {folder: state} written before the folder list
was kept, and {"shape": "folders", ...} since (worker.sync.imap). Freshness and
the poll trust an IDLE only for a mailbox whose syncs read INBOX alone
(worker.sync.imap_folders.idle_watches_every_folder): a wrong "yes" lets a
follow-up out after a reply a rule filed elsewhere.
"""

from __future__ import annotations

from typing import Any

import pytest

from worker.sync.imap_folders import folder_states, idle_watches_every_folder

STATE = {"uidvalidity": 7, "last_uid": 42, "synced_on": "2026-12-01"}


def kept(ids: Any, states: dict[str, Any] | None = None, sent: Any = "Sent") -> dict[str, Any]:
    return {
        "shape": "folders",
        "folders": states if states is not None else {"INBOX": STATE},
        "well_known": {"sentitems": sent},
        "listing": {"ids": ids, "skip": [], "at": "2026-12-01T00:00:00+00:00"},
    }


@pytest.mark.parametrize(
    ("cursor", "watched"),
    [
        (None, False),  # never synced: not known
        ({}, False),
        ({"INBOX": STATE}, True),  # flat, as stored before
        ({"inbox": STATE}, True),  # INBOX is case-insensitive (RFC 3501)
        ({"INBOX": STATE, "Customers": STATE}, False),
        ({"INBOX": STATE, "shape": STATE}, False),  # flat, with a folder called "shape"
        (kept(["INBOX"]), True),
        (kept(["INBOX"], {"INBOX": STATE, "Sent": STATE}), True),  # Sent is no reply folder
        (kept(["INBOX", "Customers"]), False),
        (kept(["INBOX", "INBOX.Customers"]), False),  # Courier's namespace
        (kept([]), False),
        (kept("INBOX", {"INBOX": STATE, "Archive": STATE}), False),  # a bad list: the states
        (kept(None, {"INBOX": STATE}, sent=None), True),  # listed a moment ago, then dropped
    ],
)
def test_idle_watches_every_folder_only_when_inbox_is_all_that_is_synced(
    cursor: Any, watched: bool
) -> None:
    assert idle_watches_every_folder(cursor) is watched


def test_folder_states_reads_both_shapes_in_place() -> None:
    flat = {"INBOX": STATE, "folders": STATE}  # a folder may be called "folders"
    assert folder_states(flat) is flat
    shaped = kept(["INBOX"])
    assert folder_states(shaped) is shaped["folders"]
    assert folder_states(None) == {}
