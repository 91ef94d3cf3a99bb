"""A provider's "you sent too much", read from its own words: a pause, never a dead address."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httplib2
import pytest
from exchangelib.errors import ErrorServerBusy, ErrorSubmissionQuotaExceeded
from googleapiclient.errors import HttpError

from worker.sync.exchange_errors import ews_error
from worker.sync.gmail_api import translate_http_error
from worker.sync.quota import QuotaError, reports_sender_quota, smtp_quota

NOW = datetime(2026, 12, 6, 15, 30, tzinfo=UTC)
MIDNIGHT = datetime(2026, 12, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("code", "text", "daily"),
    [
        # smtp.gmail.com at MAIL or RCPT
        (550, "5.4.5 Daily user sending limit exceeded. For more information on Gmail "
              "sending limits go to https://support.google.com/a/answer/166852", True),
        (550, "5.4.5 Daily user sending quota exceeded. a1si123 - gsmtp", True),
        # smtp.office365.com over the 10,000 recipients a day
        (554, "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed "
              "to process message due to a permanent exception with message Cannot submit "
              "message.", True),
        # smtp.office365.com: too many at once
        (432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", False),
        (421, "4.4.2 Message submission rate for this client has exceeded the configured limit",
         False),
    ],
)  # fmt: skip
def test_smtp_quota_answers_are_the_senders(code: int, text: str, daily: bool) -> None:
    quota = smtp_quota(code, text)
    assert quota is not None
    assert quota.daily is daily
    assert not quota.permanent
    assert str(code) in str(quota)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (552, "5.2.2 <dana@acme.test>: mailbox full"),  # the recipient's quota, not ours
        (554, "5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException"),
        (550, "5.1.1 <nobody@acme.test>: Recipient address rejected: User unknown"),
        (451, "4.3.0 Try again later"),
    ],
)
def test_other_smtp_answers_are_not_quota(code: int, text: str) -> None:
    assert smtp_quota(code, text) is None


def test_a_quota_resets_when_the_provider_says_else_at_midnight_else_after_the_back_off() -> None:
    assert QuotaError("x", daily=True, retry_after=90).resets_at(NOW, 3600) == NOW + timedelta(
        seconds=90
    )
    assert QuotaError("x", daily=True).resets_at(NOW, 3600) == MIDNIGHT
    assert QuotaError("x", daily=False).resets_at(NOW, 3600) == NOW + timedelta(hours=1)


def test_a_quota_report_blames_the_sender_and_a_full_mailbox_does_not() -> None:
    assert reports_sender_quota(
        "554 5.2.2 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to "
        "process message"
    )
    assert not reports_sender_quota("552 5.2.2 <dana@acme.test>: mailbox full")


def _gmail_error(status: int, reason: str, message: str, headers: dict[str, str]) -> HttpError:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": "usageLimits", "reason": reason, "message": message}],
        }
    }
    response = httplib2.Response({"status": str(status), **headers})
    return HttpError(response, json.dumps(body).encode())


def test_gmail_rate_limits_are_quota_errors_with_gmails_own_time() -> None:
    stamp = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    said = f"User-rate limit exceeded.  Retry after {stamp}"
    error = translate_http_error(_gmail_error(429, "rateLimitExceeded", said, {}), "sending")
    assert isinstance(error, QuotaError) and not error.daily
    assert error.retry_after is not None and 500 < error.retry_after <= 600


def test_gmails_daily_limit_without_a_time_lasts_until_midnight() -> None:
    error = translate_http_error(
        _gmail_error(403, "dailyLimitExceeded", "Daily Limit Exceeded", {}), "sending"
    )
    assert isinstance(error, QuotaError) and error.daily
    assert error.resets_at(NOW, 3600) == MIDNIGHT


def test_exchange_quota_and_busy_answers_are_quota_errors() -> None:
    quota = ews_error(ErrorSubmissionQuotaExceeded("the sender's submission quota"), "sending")
    assert isinstance(quota, QuotaError) and quota.daily
    busy = ews_error(ErrorServerBusy("busy", back_off=12), "sending")
    assert isinstance(busy, QuotaError) and busy.retry_after == 12
