"""A provider's "you have sent too much": the error every provider raises for it.

A quota error is no failure of the message: the mailbox may not send for a
while, and the message goes out when it may again. Each provider module turns
its own words for it into `QuotaError` (a `ProviderError`, so a sync that meets
one backs off as before); `worker.sequences.delivering` pauses the mailbox
until `resets_at(now)` and keeps the message claimed.

What counts, by provider (README, "Healthy mailboxes", has the sources):

    SMTP      550/421 5.4.5  "Daily user sending quota/limit exceeded" (Gmail)
              4.5.3 / 5.5.3 with "sending limit" / "too many" (rate limits)
              554 5.2.0 / 5.2.2 "SubmissionQuotaExceeded" (Microsoft 365; a plain
              5.2.2 is the *recipient's* full mailbox, never ours)
              432 4.3.2 "sender thread limit" / 421 4.4.2 "submission rate"
    Gmail API 429 rateLimitExceeded, 403 userRateLimitExceeded / rateLimitExceeded
              / dailyLimitExceeded ("Retry after <time>" when Gmail says)
    Graph     429 (and 503) with Retry-After; ErrorSubmissionQuotaExceeded
    reports   an NDR after the send was taken (Exchange Online's "554 5.2.2
              STOREDRV.Submission.Exception:SubmissionQuotaExceededException"):
              `reports_sender_quota`, read by worker.sequences.rules
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from worker.sync.base import ProviderError

# The SMTP answers that mean "this sender, for now", never "this recipient".
_SMTP_DAILY = re.compile(
    r"5\.4\.5|daily (user )?sending (quota|limit)|SubmissionQuotaExceeded|submission quota",
    re.IGNORECASE,
)
_SMTP_RATE = re.compile(
    r"4\.5\.3.*(limit|too many)|sender thread limit|submission rate|"
    r"concurrent connections? limit|sending rate",
    re.IGNORECASE,
)


# A bounce report with these words is about our mailbox, never about its recipient:
# Microsoft's NDR after a Graph or EWS send was taken (Status 5.2.2 or 5.2.0), Gmail's.
_REPORTED = re.compile(
    r"SubmissionQuotaExceeded|submission quota|daily (user )?sending (quota|limit)",
    re.IGNORECASE,
)


class QuotaError(ProviderError):
    """The provider refused to send more for now; the message itself is fine.

    Args:
        message: the provider's words, safe to show.
        daily: a daily quota (it resets at the next UTC midnight unless
            `retry_after` says when).
        retry_after: seconds the provider asked us to wait, if it said.
    """

    def __init__(self, message: str, *, daily: bool, retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.daily = daily

    def resets_at(self, now: datetime, backoff_seconds: int) -> datetime:
        """When to try again: the provider's time, else midnight UTC (daily), else the back-off."""
        if self.retry_after is not None:
            return now + timedelta(seconds=max(1.0, self.retry_after))
        if self.daily:
            return next_utc_midnight(now)
        return now + timedelta(seconds=backoff_seconds)


def next_utc_midnight(now: datetime) -> datetime:
    return (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def smtp_quota(code: int, text: str) -> QuotaError | None:
    """The QuotaError an SMTP answer means, or None when it is about the message or recipient."""
    said = f"{code} {text}"
    if _SMTP_DAILY.search(said):
        return QuotaError(f"SMTP server answered {said}", daily=True)
    if _SMTP_RATE.search(said):
        return QuotaError(f"SMTP server answered {said}", daily=False)
    return None


def reports_sender_quota(diagnostic: str) -> bool:
    """True if a bounce report's diagnostic says the *sender* was over its quota."""
    return bool(_REPORTED.search(diagnostic))
