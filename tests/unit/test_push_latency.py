"""What the push-latency measurement concludes from delays, on timings recorded from real servers.

The recorded delays are `python -m tests.services.measure_idle` runs on this
machine (the servers the suite runs, their default settings): seconds from a
message's INTERNALDATE to the moment the provider's IDLE reported it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.sequences.freshness import Knowledge, is_fresh
from worker.sync.base import HeaderSummary
from worker.sync.push_latency import (
    MEASUREMENTS_NEEDED,
    PROMPT_SECONDS,
    delays_seen,
    verdict,
)

# Recorded 2026-12-06 with `python -m tests.services.measure_idle --messages 6 --wait 90`,
# each message delivered 0-5 s after IDLE reported the one before it.
DOVECOT_IDLE = [0.8, 1.5, 0.8, 0.9, 0.8, 1.4]  # Dovecot 2.3.19.1
# Courier-IMAP 5.0.13, Debian defaults (IMAP_ENHANCEDIDLE=0, IMAP_IDLE_TIMEOUT=60): it
# looks again a whole interval after each report.
COURIER_IDLE = [57.9, 56.9, 59.0, 60.1, 58.1, 58.2]

T0 = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


def message(arrived: datetime | None) -> HeaderSummary:
    return HeaderSummary(
        provider_id="mid:<x@acme.test>",
        fetch_ref="1:1:INBOX",
        rfc_message_id="<x@acme.test>",
        from_addr="dana@acme.test",
        subject="Re: Hello",
        candidates=[],
        headers={},
        received_at=arrived,
    )


def replay(delays: list[float]) -> list[bool | None]:
    """The verdict after each recorded delay, as the syncs would store it."""
    return [verdict(delays[: n + 1]) for n in range(len(delays))]


def test_dovecot_idle_earns_trust_after_a_run_of_prompt_deliveries() -> None:
    verdicts = replay(DOVECOT_IDLE)
    assert verdicts[: MEASUREMENTS_NEEDED - 1] == [None] * (MEASUREMENTS_NEEDED - 1)
    assert all(v is True for v in verdicts[MEASUREMENTS_NEEDED - 1 :])


def test_courier_idle_that_polls_every_minute_is_never_trusted() -> None:
    assert replay(COURIER_IDLE) == [False] * len(COURIER_IDLE)  # the first late one is enough


def test_a_lucky_prompt_delivery_among_slow_ones_earns_no_trust() -> None:
    # A server that polls is prompt now and then: when its look falls just after
    # a delivery. One such among late ones changes nothing.
    lucky = [*COURIER_IDLE[:3], 1.2, *COURIER_IDLE[3:]]
    assert True not in replay(lucky)


def test_one_late_delivery_ends_trust_and_only_a_new_run_restores_it() -> None:
    late = [*DOVECOT_IDLE, 12.0]
    assert verdict(late) is False
    assert verdict([*late, 1.0, 1.0]) is False
    assert verdict([*late, 1.0, 1.0, 1.0]) is True


def test_a_push_delay_is_the_push_time_minus_the_arrival() -> None:
    pushed = (T0 + timedelta(seconds=42)).timestamp()
    seen = delays_seen(
        [message(T0), message(T0 + timedelta(seconds=50))],  # the second came after the push
        pushed_at=pushed,
        sync_started=T0 + timedelta(seconds=43),
        previous_sync=T0 - timedelta(minutes=5),
    )
    assert seen == [42.0]


def test_a_message_a_poll_found_long_after_it_arrived_is_a_push_that_missed_it() -> None:
    found = delays_seen(
        [message(T0), message(T0 + timedelta(seconds=58))],
        pushed_at=None,
        sync_started=T0 + timedelta(seconds=60),
        previous_sync=T0 - timedelta(seconds=1),
    )
    assert found == [60.0]  # the one within PROMPT_SECONDS says nothing either way
    assert PROMPT_SECONDS < 60.0


@pytest.mark.parametrize(
    ("arrived", "previous_sync", "why"),
    [
        (T0 - timedelta(days=3), T0 - timedelta(minutes=1), "older than the last sync"),
        (None, T0 - timedelta(minutes=1), "no arrival time"),
        (T0, None, "a first sync lists old mail"),
    ],
)
def test_what_says_nothing_about_the_push_is_not_counted(
    arrived: datetime | None, previous_sync: datetime | None, why: str
) -> None:
    seen = delays_seen(
        [message(arrived)],
        pushed_at=(T0 + timedelta(seconds=30)).timestamp(),
        sync_started=T0 + timedelta(seconds=31),
        previous_sync=previous_sync,
    )
    assert seen == [], why


def test_a_server_clock_ahead_of_ours_is_not_read_as_a_prompt_push() -> None:
    ahead = T0 + timedelta(minutes=2)  # the server stamps the message two minutes ahead
    seen = delays_seen(
        [message(ahead)],
        pushed_at=(T0 + timedelta(seconds=3)).timestamp(),
        sync_started=T0 + timedelta(seconds=4),
        previous_sync=T0 - timedelta(minutes=1),
    )
    assert seen == []  # not measured, so never trusted


def known(
    synced: datetime | None,
    *,
    prompt: bool | None = None,
    live_since: datetime | None = None,
    pending: datetime | None = None,
    running: bool = False,
) -> Knowledge:
    return Knowledge(
        last_synced_at=synced,
        push_prompt=prompt,
        live_since=live_since,
        pending_push=pending,
        sync_running=running,
    )


def fresh(what: Knowledge, due_ago: float = 20.0) -> bool:
    return is_fresh(what, due_at=T0 - timedelta(seconds=due_ago), now=T0, window_seconds=30)


def ago(seconds: float) -> datetime:
    return T0 - timedelta(seconds=seconds)


def test_a_sync_must_have_begun_after_the_step_fell_due_and_within_the_window() -> None:
    assert fresh(known(ago(10)), due_ago=20)
    assert not fresh(known(ago(25)), due_ago=20)  # within 30 s, but before it fell due
    assert not fresh(known(ago(40)), due_ago=60)  # after it fell due, but too long ago
    assert not fresh(known(None))


def trusted(synced_ago: float, **extra: Any) -> Knowledge:
    """A live push, up for five minutes, measured prompt (then `extra` changes)."""
    what = known(ago(synced_ago), prompt=True, live_since=ago(300))
    return replace(what, **extra)


def test_a_live_prompt_push_is_freshness_only_with_nothing_left_unsynced() -> None:
    assert fresh(trusted(60))
    assert not fresh(trusted(60, push_prompt=None))  # never measured
    assert not fresh(trusted(60, push_prompt=False))  # measured slow
    assert not fresh(trusted(60, live_since=None))  # not there now
    assert not fresh(trusted(400))  # nothing synced since it came up
    assert not fresh(trusted(60, sync_running=True))  # its sync is running
    assert not fresh(trusted(60, pending_push=ago(19)))  # a push waits for its sync
    assert fresh(trusted(60, pending_push=ago(1)))  # mail from after the step fell due
    assert not fresh(trusted(60), due_ago=PROMPT_SECONDS - 1)  # too soon to tell


def test_a_listing_provider_is_fresh_only_on_a_folder_list_made_after_the_step_fell_due() -> None:
    # IMAP, Graph, EWS: a folder a rule made before the step fell due, after the last
    # list, is read by no sync and watched by no push, whatever else is fresh.
    def lists(what: Knowledge, listed: datetime | None) -> Knowledge:
        return replace(what, lists_folders=True, listed_at=listed)

    assert fresh(lists(known(ago(10)), ago(10)), due_ago=20)
    assert not fresh(lists(known(ago(10)), ago(25)), due_ago=20)
    assert not fresh(lists(known(ago(10)), None), due_ago=20)
    # A prompt push keeps a burst fresh past the sync's window once the list is newer.
    assert fresh(lists(trusted(60), ago(60)), due_ago=120)
    assert not fresh(lists(trusted(60), ago(60)), due_ago=40)
    assert not fresh(lists(trusted(60), None))
    # Gmail lists nothing: its history covers every label, new ones too.
    assert fresh(known(ago(10)), due_ago=20)
