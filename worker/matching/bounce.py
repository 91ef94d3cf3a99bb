"""Bounces: is this a delivery-failure report, who failed, why, and for which message.

What this module owns: reading failed recipients (address, status code, reason,
hard/soft) and the original message's Message-ID out of

- RFC 3464 reports (``multipart/report; report-type=delivery-status``), and
- the free-form reports many MTAs send (qmail, Exim, old Sendmail, Exchange 2003,
  Domino, carriers ...), read with general rules rather than one parser per MTA
  (`bounce_freeform`), and
- Amazon SES notifications carried as JSON in a mail body.

The answer's shape is `bounce_report`; the cuts of a report every reader uses
(its own text, the copy of the original, each address's lines) are
`bounce_text`. This module reads the structured reports and decides which
reader a message gets, in this order: RFC 3464 (also one forwarded whole),
SES, free-form.

Delivery *delays* (``Action: delayed``, or "warning, still retrying" texts)
are reported with ``BounceOutcome.DELAYED`` and their recipients, each marked
``delayed`` and never hard: the mail server is still trying, so nothing about
the address is known yet. A report that mixes failed and delayed recipients
is ``FAILED`` and lists both, in the report's order. Success reports are
``DELIVERED`` with no recipients.
"""

from __future__ import annotations

import json
import re
from email.message import Message

from worker.matching import dsn, reasons
from worker.matching.bounce_freeform import read_free_form
from worker.matching.bounce_report import BouncedRecipient, BounceOutcome, BounceReport
from worker.matching.bounce_text import (
    ADDRESS,
    DAEMON_FROM,
    MAX_RECIPIENTS,
    lines_about,
    original_message_ids,
    report_text,
    segment_for,
    temporary,
)
from worker.matching.budget import check_budget
from worker.matching.mimetext import (
    decode_header,
    iter_own_parts,
    part_text,
    payload_of,
)
from worker.matching.msgid import parse_msgid_list

__all__ = ["read_bounce", "ses_payload"]


# SNS folds long JSON lines ("!\n ").
_SNS_FOLD = re.compile(r"!?\r?\n ")


def read_bounce(msg: Message) -> BounceReport | None:
    """The delivery report in ``msg``, or None if ``msg`` is not one."""
    original_ids = tuple(original_message_ids(msg))
    structured = _read_dsn(msg, original_ids)
    if structured is not None:
        return structured
    forwarded = _forwarded_report(msg)
    if forwarded is not None:
        return _read_dsn(forwarded, tuple(original_message_ids(forwarded)))
    ses = _read_ses_json(msg, original_ids)
    if ses is not None:
        return ses
    return read_free_form(msg, original_ids)


def _read_dsn(msg: Message, original_ids: tuple[str, ...]) -> BounceReport | None:
    """RFC 3464: recipients from the delivery-status part(s)."""
    status_texts = [
        part_text(p)
        for p in iter_own_parts(msg)
        if p.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
    ]
    report_type = str(msg.get_param("report-type", "") or "").lower()
    if not status_texts and (
        report_type == "delivery-status" or DAEMON_FROM.search(decode_header(msg.get("From")))
    ):
        # A status part labelled text/plain, or a report whose MIME boundary is
        # broken so that it reads as one text: look for the fields in the text.
        status_texts = [
            part_text(p)
            for p in iter_own_parts(msg)
            if p.get_content_maintype() in ("text", "multipart")
        ]
    entries = [e for text in status_texts for e in dsn.parse_dsn_fields(text)]
    entries = [e for e in entries if ADDRESS.search(e.address)][:MAX_RECIPIENTS]
    if not entries:
        return None
    human = report_text(msg)
    reported: list[BouncedRecipient] = []
    for entry in entries:
        check_budget()
        if _succeeded(entry):
            continue
        reported.append(_recipient_from_dsn(entry, human, len(entries)))
    if not reported:
        return BounceReport(BounceOutcome.DELIVERED, (), original_ids)
    outcome = BounceOutcome.DELAYED if all(r.delayed for r in reported) else BounceOutcome.FAILED
    return BounceReport(outcome, tuple(reported), original_ids)


def _succeeded(entry: dsn.DsnRecipient) -> bool:
    """True if the report says this recipient's copy was delivered (or passed on).

    A 2.x.x status is success whatever the Action word beside it says: some MTAs
    write ``Action: deliverable`` or words of their own. Reading such a
    recipient as a (soft) failure would send the step again to someone who got
    it. Without a status, the Action words of RFC 3464 for success decide.
    """
    status = entry.status or dsn.best_status(entry.diagnostic)
    if status[:2] == "2.":
        return True
    return entry.action in ("delivered", "relayed", "expanded")


def _forwarded_report(msg: Message) -> Message | None:
    """A delivery-status report attached whole to ``msg`` (a bounce forwarded on)."""
    for part in iter_own_parts(msg):
        if part.get_content_type() != "message/rfc822":
            continue
        payload = payload_of(part)
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message) and inner.get_content_type() == "multipart/report":
            return inner
    return None


def _recipient_from_dsn(entry: dsn.DsnRecipient, human: str, count: int) -> BouncedRecipient:
    address = ADDRESS.search(entry.address)
    addr = address.group(0) if address else entry.address
    # The human-readable part often says more than a terse Diagnostic-Code.
    context = segment_for(addr, human) if count > 1 else human
    status = dsn.best_status(entry.diagnostic) or entry.status
    if not status or (status.endswith(".0.0") and not dsn.best_status(entry.diagnostic)):
        # Some MTAs (OpenSMTPD) put the remote server's code only in the text part.
        status = dsn.best_status(lines_about(addr, human), context) or status
    delayed = entry.action == "delayed"
    reason = reasons.reason_for_category(entry.category) or reasons.reason_for(
        entry.diagnostic, status, context
    )
    if delayed and reason in ("onhold", "undefined"):
        reason = "expired"
    if not status:
        status = reasons.status_for_reason(reason, delayed or temporary(entry.diagnostic))
    return BouncedRecipient(
        address=addr.lower() if "@" in addr else addr,
        status=status,
        hard=not delayed and reasons.is_hard(reason, status),
        reason=reason,
        diagnostic=" ".join(entry.diagnostic.split())[:500],
        delayed=delayed,
    )


def _read_ses_json(msg: Message, original_ids: tuple[str, ...]) -> BounceReport | None:
    """Amazon SES bounce/delivery notifications delivered by email as JSON."""
    data = ses_payload(msg)
    if data is None or str(data.get("notificationType", "")).lower() not in ("bounce", "delivery"):
        return None
    mail = data.get("mail") if isinstance(data.get("mail"), dict) else {}
    ids = list(original_ids)
    if isinstance(mail, dict):
        for header in mail.get("headers", []) or []:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
                ids.extend(parse_msgid_list(str(header.get("value", ""))))
    if str(data.get("notificationType")).lower() == "delivery":
        return BounceReport(BounceOutcome.DELIVERED, (), tuple(dict.fromkeys(ids)))
    bounce = data.get("bounce")
    if not isinstance(bounce, dict):
        bounce = {}
    permanent = str(bounce.get("bounceType", "")).lower() == "permanent"
    recipients: list[BouncedRecipient] = []
    for item in bounce.get("bouncedRecipients", []) or []:
        if not isinstance(item, dict):
            continue
        diagnostic = str(item.get("diagnosticCode", ""))
        status = dsn.best_status(diagnostic) or dsn.best_status(str(item.get("status", "")))
        reason = reasons.reason_for(diagnostic, status)
        if not status:
            status = reasons.status_for_reason(reason, not permanent)
        recipients.append(
            BouncedRecipient(
                address=str(item.get("emailAddress", "")).lower(),
                status=status,
                hard=reasons.is_hard(reason, status),
                reason=reason,
                diagnostic=diagnostic[:500],
            )
        )
    return BounceReport(BounceOutcome.FAILED, tuple(recipients), tuple(dict.fromkeys(ids)))


def ses_payload(msg: Message) -> dict[str, object] | None:
    """The JSON object of an Amazon SES notification body, if the body is one."""
    for part in iter_own_parts(msg):
        if part.get_content_maintype() != "text":
            continue
        text = part_text(part)
        start, end = text.find("{"), text.rfind("}")
        if start < 0 or end <= start or "notificationType" not in text:
            continue
        try:
            # SNS folds long JSON lines ("!\n "): undo that before parsing.
            data = json.loads(_SNS_FOLD.sub("", text[start : end + 1]), strict=False)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("Message"), str):
            # SNS envelope: the notification is a JSON string inside it.
            try:
                data = json.loads(data["Message"])
            except ValueError:
                continue
        if isinstance(data, dict):
            return data
    return None
