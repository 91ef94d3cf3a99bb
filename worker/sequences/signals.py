"""What an answer to one of our messages means for its sequence: the signal.

What this module owns: turning a classified inbound message (``worker.matching``)
and who wrote it into a ``Signal``: the event kind recorded under the event's
natural key and the data it keeps about why. It reads nothing and changes
nothing; ``worker.sequences.rules`` applies a new signal.

    classified as                  written by            signal
    reply                          anyone but a teammate reply (halts)
    reply / auto_reply             a teammate            teammate_reply (recorded only)
    auto_reply (absence)           anyone else           auto_reply (pauses)
    auto_reply (acknowledgement)   anyone else           auto_reply, acknowledgement:
                                                         recorded, nothing paused
    bounce                         -                     bounce / soft_bounce / delayed /
                                                         other_bounce (see _bounce_signal)
    complaint                      -                     complaint
    other                          -                     other (recorded only: a success
                                                         notice, a read receipt ...)

A teammate (a user or mailbox of the same team, or an address at the team's own
domains; decided by ``worker.sync.inbound``) answering in the thread, say a
manager's "let me know how it goes" on reply-all, is not the prospect
answering: it is recorded and never halts or pauses the sequence. The prospect's
own address always counts as the prospect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from config import Settings, get_settings
from core.zones.windows import SendWindow, morning_of
from worker.matching.bounce_report import BouncedRecipient
from worker.matching.classify import Classification

RESUME_HOUR = 8  # a stated return date resumes the sequence that morning, prospect-local


@dataclass(frozen=True)
class Signal:
    """What an inbound message means for the sequence, decided before it is recorded.

    ``kind`` is the event kind (part of the event's natural key); ``data`` is
    what the event stores about why (for a bounce, the entry about the
    prospect's address first, then every entry).
    """

    kind: str
    data: dict[str, Any]


def read_signal(
    classification: Classification,
    prospect_email: str | None,
    now: datetime,
    settings: Settings | None = None,
    *,
    other_recipients: frozenset[str] = frozenset(),
    from_teammate: bool = False,
    resume_in: tuple[ZoneInfo, SendWindow] | None = None,
) -> Signal:
    """The signal a classified message carries for the prospect we wrote to.

    `other_recipients` are the message's other To/Cc addresses: a bounce about
    one of them (a CC'd colleague's full mailbox) says nothing about the prospect.
    `from_teammate`: the sender is one of the team (see module docstring).
    `resume_in`: the prospect's zone and the sequence's send window, for when an
    out-of-office resumes (UTC and any time when not given).
    """
    kind = classification.kind
    if kind == "bounce":
        return _bounce_signal(classification, prospect_email, other_recipients)
    if from_teammate and kind in ("reply", "auto_reply"):
        return Signal("teammate_reply", {"kind": kind})
    if kind == "other":
        return Signal("other", {"note": classification.note})
    data: dict[str, Any] = {}
    if kind == "auto_reply" and classification.note == "acknowledgement":
        # "We received your message" says nothing about when anyone reads it.
        data["acknowledgement"] = True
    elif kind == "auto_reply":
        until = classification.auto_reply_until
        data["until"] = until.isoformat() if until else None
        zone, window = resume_in or (ZoneInfo("UTC"), None)
        resume = resume_time(until, now, settings or get_settings(), zone=zone, window=window)
        data["resume_at"] = resume.isoformat()
    elif kind == "complaint" and classification.complaint is not None:
        data["feedback_type"] = classification.complaint.feedback_type
        data["complainant"] = classification.complaint.complainant
    elif kind == "reply" and classification.unsubscribe_request:
        data["unsubscribe"] = True
    return Signal(kind, data)


def _bounce_signal(
    classification: Classification, prospect_email: str | None, other_recipients: frozenset[str]
) -> Signal:
    recipients = classification.bounce_recipients
    everyone = [_recipient_data(r) for r in recipients]
    about_prospect = [r for r in recipients if prospect_email and r.address == prospect_email]
    # A report about our message names the prospect, or (forwarding, aliases)
    # some address it was delivered on to: then every entry is about it — except
    # entries naming the message's other recipients, which are about them.
    others = {a.lower() for a in other_recipients} - {(prospect_email or "").lower()}
    candidates = about_prospect or [r for r in recipients if r.address.lower() not in others]
    if recipients and not candidates:
        # Only a CC'd (or other To) address failed: recorded, nothing halted.
        return Signal("other_bounce", {"bounce": everyone})
    failed = [r for r in candidates if not r.delayed]
    if candidates and not failed:
        chosen = candidates[0]
        return Signal("delayed", {**_recipient_data(chosen), "bounce": everyone})
    hard = [r for r in failed if r.hard]
    if hard:
        return Signal("bounce", {**_recipient_data(hard[0]), "bounce": everyone})
    if failed:
        return Signal("soft_bounce", {**_recipient_data(failed[0]), "bounce": everyone})
    # A failure report we could not read a recipient from: soft, so the retry
    # policy decides, rather than declaring a person's address dead on a guess.
    return Signal("soft_bounce", {"reason": "undefined", "status": "", "bounce": everyone})


def _recipient_data(recipient: BouncedRecipient) -> dict[str, Any]:
    return {
        "recipient": recipient.address,
        "status": recipient.status,
        "reason": recipient.reason,
        "hard": recipient.hard,
        "delayed": recipient.delayed,
        "diagnostic": recipient.diagnostic[:500],
    }


def resume_time(
    until: date | None,
    now: datetime,
    settings: Settings,
    *,
    zone: ZoneInfo | None = None,
    window: SendWindow | None = None,
) -> datetime:
    """When an enrolment paused by an auto-reply resumes (UTC).

    The morning (08:00 in the prospect's `zone`) of a stated return date still
    to come there, moved to the send window's next opening if it is closed then
    (a return on Saturday resumes Monday 08:00); else the default pause; never
    later than the longest pause (a misread year must not silence a prospect
    for ever).
    """
    zone = zone or ZoneInfo("UTC")
    latest = now + timedelta(days=settings.auto_reply_max_pause_days)
    if until is not None and until > now.astimezone(zone).date():
        every_day = SendWindow(days=0b1111111, start_minute=0, end_minute=24 * 60)
        return min(morning_of(until, zone, window or every_day, RESUME_HOUR), latest)
    return min(now + timedelta(seconds=settings.auto_reply_pause_seconds), latest).astimezone(UTC)
