"""What a delivery report says: its outcome, each recipient it names, the original's ids.

The answer `worker.matching.bounce.read_bounce` gives, whichever reader found
it (RFC 3464, Amazon SES, or a free-form report). A recipient is hard only
when the report says the address will never work; a delayed one is never
hard. These are plain values: nothing here reads mail.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class BounceOutcome(enum.Enum):
    """What a delivery report says overall."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"


@dataclass(frozen=True)
class BouncedRecipient:
    """One recipient a bounce reports as failed."""

    address: str
    status: str
    hard: bool
    reason: str
    diagnostic: str
    delayed: bool = False  # the server is still retrying: not a failure (yet)


@dataclass(frozen=True)
class BounceReport:
    """What a delivery report says: outcome, failed recipients, original ids."""

    outcome: BounceOutcome
    recipients: tuple[BouncedRecipient, ...]
    original_message_ids: tuple[str, ...]
