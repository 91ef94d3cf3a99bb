"""Classify an inbound message that answers one of ours: reply, auto-reply, bounce ...

What this module owns: the one decision "what is this message", in this order,
each step owned by its module:

    complaint   ARF / JMRP / SES feedback report            complaint.py
    bounce      a delivery report with failed recipients    bounce.py
    other       delay notices, success DSNs, read receipts
    other       calendar invitations and responses          nonanswer.py
    auto_reply  out-of-office and other automatic answers   autoreply.py
                "we received your message" receipts         acknowledgement.py
    other       other machine mail (Auto-Submitted; lists, newsletters, transactional
                and no-reply senders naming none of ours)    nonanswer.py
    reply       what a person wrote                         replytext.py

A message with no In-Reply-To/References and no machine signal is still a
``reply`` when a person wrote it: by the time a message reaches us it has
been matched to one of ours (or handed to us as an answer), and a missed real
reply costs the user far more than a stray one.

Nothing a message holds makes ``classify_message`` raise or answer wrongly in
silence: it runs on untrusted bytes from the whole internet inside sync jobs,
and one message must neither stop a mailbox's sync nor lose a reply.

- It runs under a time budget (``budget.py``, 2 s by default). Over it, or when
  reading the bytes raises one of the errors hostile input can cause in the
  parsers (``_READ_ERRORS``, logged as ``classify_failed``), the message comes
  out ``quarantined`` with a ``reason``: the sync keeps it where a person sees
  it and tries again later. It is never read as ``other``, which would let the
  sequence go on as if the person had not answered.
- Nothing broader is caught. RQ's job timeout (``rq.timeouts.JobTimeoutException``,
  an ``Exception`` raised by SIGALRM wherever the job happens to be) must fail
  the job, so this module never catches ``Exception``.
"""

from __future__ import annotations

import datetime as dt
import email.errors
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Literal

from worker.matching.acknowledgement import is_acknowledgement
from worker.matching.autoreply import is_auto_reply, mentions_absence
from worker.matching.bounce import read_bounce
from worker.matching.bounce_report import BouncedRecipient, BounceOutcome
from worker.matching.budget import DEFAULT_BUDGET_SECONDS, OverBudget, time_budget
from worker.matching.complaint import Complaint, read_complaint
from worker.matching.mimetext import (
    body_text,
    decode_header,
    iter_own_parts,
    parse_bytes,
    part_text,
)
from worker.matching.msgid import parse_msgid_list, reference_candidates
from worker.matching.nonanswer import (
    calendar_method,
    is_bulk,
    is_calendar_response,
    is_read_receipt,
)
from worker.matching.replytext import (
    REPLY_PREFIX,
    is_unsubscribe_request,
    new_text,
    quotes_history,
)
from worker.matching.return_dates import message_date, return_date

__all__ = ["Classification", "Kind", "classify_message"]

log = logging.getLogger(__name__)

Kind = Literal["reply", "auto_reply", "bounce", "complaint", "other", "quarantined"]

# What reading hostile bytes can raise inside the standard library's parsers and
# decoders (and, through a bug of ours, in our readers): a malformed part, a
# codec that cannot decode, nesting deeper than the recursion limit. Not
# ``Exception``: that would swallow RQ's job timeout (see module docstring).
_READ_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # UnicodeError, binascii.Error, JSON errors
    LookupError,  # unknown codecs, IndexError, KeyError
    TypeError,
    AttributeError,
    AssertionError,
    ArithmeticError,
    RecursionError,
    email.errors.MessageError,
)

# RFC 8098's Original-Message-ID field, value with its folded continuation lines.
_ORIGINAL_MESSAGE_ID = re.compile(
    r"^[ \t]*+original-message-id[ \t]*+:(.*(?:\r?\n[ \t]+.*)*)", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True)
class Classification:
    """What an inbound message is, and what the sequence engine needs from it.

    ``refers_to``: canonical Message-IDs this message answers or reports on,
    most specific first. ``bounce_recipients``: failed recipients (bounces
    only). ``auto_reply_until``: the stated return date (auto-replies only).
    ``text``: a reply's new text. ``unsubscribe_request``: a reply asking to
    stop (kind stays ``reply``; the sequence engine opts the address out).
    ``complaint``: feedback-report details (complaints only). ``reason``: why
    a ``quarantined`` message could not be classified (over budget, a read error).
    ``note``: what kind of ``other`` or ``auto_reply`` it is (``delivered``,
    ``read_receipt``, ``calendar``, ``automatic``, ``bulk``; ``acknowledgement``
    for an auto-reply that only confirms receipt).
    """

    kind: Kind
    refers_to: tuple[str, ...] = ()
    bounce_recipients: tuple[BouncedRecipient, ...] = ()
    auto_reply_until: dt.date | None = None
    text: str | None = None
    unsubscribe_request: bool = False
    complaint: Complaint | None = field(default=None)
    delayed: bool = False
    reason: str | None = None
    note: str | None = None

    def as_json(self, path: str) -> dict[str, object]:
        """The command-line contract's JSON object for this classification.

        Six keys, always, in this order; a ``quarantined`` answer adds a seventh,
        ``reason``.
        """
        answer: dict[str, object] = {
            "path": path,
            "kind": self.kind,
            "refers_to": list(self.refers_to),
            "bounce": (
                {
                    "recipients": [
                        {
                            "address": r.address,
                            "status": r.status,
                            "hard": r.hard,
                            "delayed": r.delayed,
                        }
                        for r in self.bounce_recipients
                    ]
                }
                if self.kind == "bounce"
                else None
            ),
            "auto_reply": (
                {"until": self.auto_reply_until.isoformat() if self.auto_reply_until else None}
                if self.kind == "auto_reply"
                else None
            ),
            "text": self.text if self.kind == "reply" else None,
        }
        if self.kind == "quarantined":
            answer["reason"] = self.reason
        return answer


OTHER = Classification(kind="other")


def classify_message(
    raw: bytes, *, budget: float | None = DEFAULT_BUDGET_SECONDS
) -> Classification:
    """Classify one raw RFC 5322 message within ``budget`` seconds (None: no budget).

    Over budget, or on a read error, the answer is ``quarantined`` with a
    ``reason`` (see module docstring); nothing else is caught.
    """
    try:
        with time_budget(budget):
            return _classify(parse_bytes(raw))
    except OverBudget as exc:
        log.warning("classify_over_budget budget=%s size=%d", budget, len(raw))
        return Classification(kind="quarantined", reason=str(exc))
    except _READ_ERRORS as exc:
        log.warning("classify_failed error=%s size=%d", type(exc).__name__, len(raw))
        return Classification(
            kind="quarantined", reason=f"classification failed: {type(exc).__name__}"
        )


def _classify(msg: Message) -> Classification:
    references = tuple(reference_candidates(msg))

    complaint = read_complaint(msg)
    if complaint is not None:
        ids = _merge(complaint.original_message_ids, references)
        return Classification(kind="complaint", refers_to=ids, complaint=complaint)

    bounce = read_bounce(msg)
    if bounce is not None:
        ids = _merge(bounce.original_message_ids, references)
        if bounce.outcome is BounceOutcome.DELIVERED:
            return Classification(kind="other", refers_to=ids, note="delivered")
        return Classification(
            kind="bounce",
            refers_to=ids,
            bounce_recipients=bounce.recipients,
            delayed=bounce.outcome is BounceOutcome.DELAYED,
        )

    receipt_ids = _read_receipt_ids(msg)
    if receipt_ids is not None:
        return Classification(
            kind="other", refers_to=_merge(receipt_ids, references), note="read_receipt"
        )

    subject = decode_header(msg.get("Subject"))
    body = body_text(msg)
    text = new_text(body)
    if calendar_method(msg) or is_calendar_response(subject, text):
        return Classification(kind="other", refers_to=references, note="calendar")
    if is_read_receipt(subject, text):
        return Classification(kind="other", refers_to=references, note="read_receipt")
    acknowledgement = is_acknowledgement(msg, subject, text)
    if is_auto_reply(msg, subject, text, quotes_history(body)):
        until = return_date(f"{subject}\n{text}", message_date(msg))
        # An acknowledgement that also says someone is away is an absence notice.
        receipt_only = acknowledgement and until is None and not mentions_absence(subject, text)
        return Classification(
            kind="auto_reply",
            refers_to=references,
            auto_reply_until=until,
            note="acknowledgement" if receipt_only else None,
        )
    if acknowledgement:
        return Classification(kind="auto_reply", refers_to=references, note="acknowledgement")

    auto_submitted = str(msg.get("Auto-Submitted", "no")).strip().lower()
    if not auto_submitted.startswith("no"):
        # RFC 3834: generated by a machine (notifications, reports we do not know).
        return Classification(kind="other", refers_to=references, note="automatic")
    if not references and not REPLY_PREFIX.match(subject) and is_bulk(msg, body):
        return Classification(kind="other", refers_to=references, note="bulk")
    return Classification(
        kind="reply",
        refers_to=references,
        text=text,
        unsubscribe_request=is_unsubscribe_request(f"{subject}\n{text}"),
    )


def _read_receipt_ids(msg: Message) -> tuple[str, ...] | None:
    """Original ids of a read receipt (RFC 8098 MDN), or None if ``msg`` is not one."""
    report_type = str(msg.get_param("report-type", "") or "").lower()
    parts = [
        p for p in iter_own_parts(msg) if p.get_content_type() == "message/disposition-notification"
    ]
    if report_type != "disposition-notification" and not parts:
        return None
    ids: list[str] = []
    for part in parts:
        match = _ORIGINAL_MESSAGE_ID.search(part_text(part))
        if match:
            ids.extend(parse_msgid_list(match.group(1)))
    return tuple(ids)


def _merge(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(first + second))
