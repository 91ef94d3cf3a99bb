"""Sending settings: each mailbox's daily cap and spacing, quota back-off, the bounce guard.

The defaults sit well under what the providers allow (README, "Healthy
mailboxes", gives the sources): Google Workspace lets a user send about 2,000
messages a day (500 for consumer Gmail), Microsoft 365 10,000 recipients a
day and 30 messages a minute. A sales mailbox that sends anywhere near those
gets throttled or blocked, so we stop far earlier. A mailbox's own
`daily_cap`/`send_spacing_seconds` override these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from config.settings.parsing import env_int


@dataclass(frozen=True)
class SendingSettings:
    """Pacing and guarding sends (worker/sequences/pacing.py, bounce_guard.py)."""

    daily_cap_gmail: int = 400
    daily_cap_microsoft: int = 800  # Microsoft 365 through Graph, and Exchange (EWS)
    daily_cap_imap: int = 300
    spacing_seconds: int = 90
    jitter_percent: int = 30  # each wait is spacing * (1 ± jitter)
    # A quota error that names no reset time and is no daily quota pauses this long.
    quota_backoff_seconds: int = 3600
    bounce_guard_sends: int = 50  # the recent sends a hard-bounce rate is taken over
    bounce_guard_min_sends: int = 20  # fewer than this: no verdict yet
    bounce_guard_percent: int = 8  # a rate above this pauses

    def daily_cap(self, kind: str) -> int:
        """The default cap of a mailbox of this kind (imap, gmail, graph, exchange)."""
        if kind == "gmail":
            return self.daily_cap_gmail
        if kind in ("graph", "exchange"):
            return self.daily_cap_microsoft
        return self.daily_cap_imap


def read_sending(env: Mapping[str, str]) -> SendingSettings:
    return SendingSettings(
        daily_cap_gmail=env_int(env, "SIGHTLINE_DAILY_CAP_GMAIL", 400, 1, 2000),
        daily_cap_microsoft=env_int(env, "SIGHTLINE_DAILY_CAP_MICROSOFT", 800, 1, 10000),
        daily_cap_imap=env_int(env, "SIGHTLINE_DAILY_CAP_IMAP", 300, 1, 100000),
        spacing_seconds=env_int(env, "SIGHTLINE_SEND_SPACING_SECONDS", 90, 0, 86400),
        jitter_percent=env_int(env, "SIGHTLINE_SEND_JITTER_PERCENT", 30, 0, 90),
        quota_backoff_seconds=env_int(env, "SIGHTLINE_QUOTA_BACKOFF_SECONDS", 3600, 60, 7 * 86400),
        bounce_guard_sends=env_int(env, "SIGHTLINE_BOUNCE_GUARD_SENDS", 50, 5, 10000),
        bounce_guard_min_sends=env_int(env, "SIGHTLINE_BOUNCE_GUARD_MIN_SENDS", 20, 1, 10000),
        bounce_guard_percent=env_int(env, "SIGHTLINE_BOUNCE_GUARD_PERCENT", 8, 1, 100),
    )
