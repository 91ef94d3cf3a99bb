"""What an EWS call can raise, in our words: one `ProviderError` that says whether to retry.

exchangelib raises its own errors, wraps requests' and the socket's, and
sometimes a server that is not Exchange at all answers. `ews_error` turns each
into one `ProviderError` (retry later, back off, reconnect, or give up), and
`ews_call` runs an EWS call through it.

The security property kept here: bytes the far side sent are shown only when
they are a well-formed EWS response message (a ResponseCode and its
MessageText), cut to `MAX_WORDS` characters of printable text. A failed
connection, a TLS failure, an answer that is not EWS: our own words, never
theirs, since the EWS URL is a team's and its answer lands in the UI and logs.
This module never opens a connection.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TypeVar

import requests
from exchangelib.errors import (
    CASError,
    ErrorAccessDenied,
    ErrorInternalServerTransientError,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    ErrorSubmissionQuotaExceeded,
    ErrorTimeoutExpired,
    EWSError,
    RateLimitError,
    ResponseMessageError,
    TransportError,
    UnauthorizedError,
)
from exchangelib.util import ParseError

from core.outbound import OutboundError, describe_os_error
from worker.sync.base import ProviderError
from worker.sync.quota import QuotaError

DEFAULT_BACK_OFF = 30.0
T = TypeVar("T")
MAX_WORDS = 200
# What an EWS call can raise that `ews_error` turns into a ProviderError.
EWS_FAILURES = (
    EWSError,
    TransportError,
    requests.RequestException,
    OSError,
    OutboundError,
    ParseError,
)


def _network_cause(exc: BaseException) -> BaseException | None:
    """The requests or socket error behind `exc` (exchangelib re-raises them as its own)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, requests.RequestException | OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe_network(exc: BaseException) -> str:
    """Our words for a failed HTTP connection: never what the far side sent."""
    inner: BaseException | None = exc
    for _ in range(6):  # requests → urllib3 → the socket's error
        if isinstance(inner, OSError) and not isinstance(inner, requests.RequestException):
            return describe_os_error(inner)
        if inner is None:
            break
        reason = getattr(inner, "reason", None)
        inner = (
            reason if isinstance(reason, BaseException) else (inner.__cause__ or inner.__context__)
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, requests.Timeout | socket.timeout):
        return "no answer in time"
    return "the connection failed"


def _words(exc: Exception) -> str:
    text = "".join(c if c.isprintable() else " " for c in str(exc))
    text = " ".join(text.split())[:MAX_WORDS]
    return f": {text}" if text else ""


def ews_error(exc: Exception, doing: str) -> ProviderError:
    """One ProviderError for whatever EWS raised. Text from the far side is kept only
    when it is a well-formed EWS response message (a ResponseCode and its MessageText)."""
    if isinstance(exc, OutboundError):
        return ProviderError(str(exc), permanent=exc.permanent)
    # Quota and throttling are QuotaErrors: a sync backs off (retry_after) as before, a
    # send pauses the mailbox instead of failing the step (worker.sync.quota).
    if isinstance(exc, ErrorSubmissionQuotaExceeded):
        return QuotaError(f"Exchange sending quota exceeded ({doing}){_words(exc)}", daily=True)
    if isinstance(exc, ErrorServerBusy):
        wait = exc.back_off if exc.back_off else DEFAULT_BACK_OFF
        return QuotaError(
            f"Exchange is busy ({doing}): back off {wait:.0f} s", daily=False, retry_after=wait
        )
    if isinstance(exc, RateLimitError):
        return QuotaError(f"Exchange throttled {doing}", daily=False, retry_after=DEFAULT_BACK_OFF)
    if isinstance(exc, UnauthorizedError | ErrorAccessDenied):
        return ProviderError(f"Exchange refused the login ({doing})", needs_reconnect=True)
    if isinstance(exc, ErrorNonExistentMailbox):
        return ProviderError(f"Exchange has no such mailbox ({doing})", permanent=True)
    cause = _network_cause(exc)
    if cause is not None:
        return ProviderError(f"Exchange unreachable while {doing}: {_describe_network(cause)}")
    if isinstance(exc, ErrorTimeoutExpired | ErrorInternalServerTransientError):
        return ProviderError(f"Exchange unreachable while {doing}: {type(exc).__name__}")
    if isinstance(exc, ResponseMessageError):  # a ResponseCode in a well-formed answer
        return ProviderError(f"Exchange answered {type(exc).__name__} while {doing}{_words(exc)}")
    if isinstance(exc, TransportError | CASError):  # not EWS, or not as EWS speaks: no echo
        return ProviderError(f"the server did not answer like Exchange while {doing}")
    if isinstance(exc, EWSError):
        return ProviderError(
            f"Exchange answered {type(exc).__name__} while {doing}{_words(exc)}", permanent=True
        )
    return ProviderError(f"Exchange call failed while {doing}: {type(exc).__name__}")


def ews_call(doing: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except ProviderError:
        raise
    except EWS_FAILURES as exc:
        raise ews_error(exc, doing) from exc
