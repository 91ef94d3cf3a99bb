"""Bounces: is this a delivery-failure report, who failed, why, and for which message.

What this module owns: reading failed recipients (address, status code, reason,
hard/soft) and the original message's Message-ID out of

- RFC 3464 reports (``multipart/report; report-type=delivery-status``), and
- the free-form reports many MTAs send (qmail, Exim, old Sendmail, Exchange 2003,
  Domino, carriers ...), read with general rules rather than one parser per MTA:

      report text  = the bounce's own text, cut where the copy of the original starts
      recipients   = addresses named in the report text, minus the sender's own
                     and the daemons' (fallbacks: X-Failed-Recipients, original To)
      diagnostic   = the report lines about each recipient, up to the next one
      status       = the most specific enhanced code in the diagnostic (dsn.py)
      reason/hard  = reasons.py

- Amazon SES notifications carried as JSON in a mail body.

Delivery *delays* (``Action: delayed``, or "warning, still retrying" texts)
are reported with ``BounceOutcome.DELAYED`` and their recipients, each marked
``delayed`` and never hard: the mail server is still trying, so nothing about
the address is known yet. A report that mixes failed and delayed recipients
is ``FAILED`` and lists both, in the report's order. Success reports are
``DELIVERED`` with no recipients.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from email.message import Message

from worker.matching import dsn, reasons
from worker.matching.budget import check_budget
from worker.matching.mimetext import (
    decode_header,
    html_to_text,
    iter_all_parts,
    iter_own_parts,
    part_text,
)
from worker.matching.msgid import parse_msgid_list
from worker.matching.replytext import REPLY_PREFIX

__all__ = ["BounceOutcome", "BounceReport", "BouncedRecipient", "read_bounce", "ses_payload"]


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


# Local part bounded (RFC 5321: 64) so that long runs of address-like text, such
# as base64 lines, cost linear time instead of quadratic.
_ADDRESS = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{0,63}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+"
)
# A report's own text is short; what is longer is a copy of something else.
_MAX_REPORT_CHARS = 100_000
# The copy of the original message read for its headers (Message-ID, From, To):
# they are at its start, so a long copy's tail holds nothing we read.
_MAX_ORIGINAL_CHARS = 200_000
# Undecoded payloads read when a report's MIME structure is broken.
_MAX_ALL_TEXT_CHARS = 500_000
# Failed recipients read from one report. We send each message to one prospect
# (and a few on CC); a report listing more names addresses that are not ours.
MAX_RECIPIENTS = 50
# The text read about one recipient (its lines, its segment of the report):
# an MTA's diagnostic is a few lines; far text is about something else.
_MAX_SEGMENT_CHARS = 10_000
# How far back the start of an address's line is looked for ("To: a@b" lines).
_MAX_LINE_PREFIX = 200
_DAEMON_LOCAL = re.compile(
    r"^(?:mailer-daemon|postmaster|post_master|poostmaster|mail-daemon|mailerdaemon"
    r"|double-bounce|no-?reply|noreply|bounce[s]?|daemon|root|mail\.delivery\.system)$",
    re.IGNORECASE,
)
_DAEMON_FROM = re.compile(
    r"mailer-daemon|postmaster|post_master|mail delivery|mail\.delivery|delivery subsystem"
    r"|mail administrator|ndr administrator|mailer daemon|interscan|system administrator"
    r"|mail deliver system|mdaemon|<>",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|delivery (?:status notification|failure|has failed|notification)"
    r"|mail delivery failed|failure notice|returned mail|delivery failure|failed delivery"
    r"|failure delivery|could not be delivered|not delivered|returning (?:message )?to sender"
    r"|error sending your mail|mail system error|nondeliverable|non remis|unzustellbar"
    r"|onbestelbaar|non recapitabile|no se puede entregar|olevererbar|unbestellbar"
    r"|delivery status notification|mail failed|loop alert|message delivery has failed"
    r"|warning: could not send|delayed mail|delivery delayed|mail failure|не доставлено",
    re.IGNORECASE,
)
_FAILURE_TEXT = re.compile(
    r"could not be delivered|couldn't be delivered|was not delivered|wasn't delivered"
    r"|unable to deliver|undeliverable|delivery (?:has )?failed|failed permanently"
    r"|permanent (?:fatal )?(?:error|failure)|did not reach|delivery to the following"
    r"|not be delivered|returned to sender|i'm afraid i wasn't able|following address(?:es)?"
    r" (?:had|failed)|message could not|rejected|user unknown|delivery error"
    r"|not delivered|failure reasons|mailbox is full|error|delivery failure|fatal"
    r"|duplicated message-id|mail loop|loop detected",
    re.IGNORECASE,
)
_STRONG_FAILURE_TEXT = re.compile(
    r"could not be delivered to|was not delivered to|unable to deliver (?:your )?message to"
    r"|delivery to the following recipients? failed|following address(?:es)? failed"
    r"|did not reach the following recipient|message could not be delivered"
    r"|wasn't able to deliver your message|delivery has failed to these recipients",
    re.IGNORECASE,
)
_DELAY_TEXT = re.compile(
    r"warning message only|has been delayed|will (?:be retried|continue to try|keep trying)"
    r"|still being retried|not yet been delivered|delivery (?:is )?delayed"
    r"|delayed \d+ (?:hour|minute|day)"
    r"|could not send message for past|delivery attempts will continue",
    re.IGNORECASE,
)
_PERMANENT_TEXT = re.compile(
    r"failed permanently|permanent (?:fatal )?(?:error|failure)|i've given up|have given up"
    r"|giving up|returned to sender|could not be delivered|message expired|been returned",
    re.IGNORECASE,
)
# Where the copy of the original message starts inside a free-form report.
# Line-anchored, so spaces are [ \t] (\s would run across blank lines: 400 of
# them took 1.3 s, 800 10 s) and possessive (a ruler between two runs of
# spaces must not be re-split on failure).
_ORIGINAL_MARKER = re.compile(
    r"^[ \t]*+(?:[-=_*]++[ \t]*+)?(?:below this line is a copy of the message"
    r"|original message(?: follows)?|returned message|unsent message follows"
    r"|this is a copy of the message"
    r"|(?:the )?headers? of (?:the )?(?:original|returned) message|message headers? follows?"
    r"|original message headers|copy of the original message|returned mail follows"
    r"|content of the original message|original mail)\b"
    r"|^(?:return-path|received|dkim-signature|domainkey-signature|x-original-to|delivered-to"
    r"|authentication-results|message-id):",
    re.IGNORECASE | re.MULTILINE,
)
# Header lines in a copy of the original, value with its folded continuation
# lines. Nothing follows the value's repetition, so it never backtracks.
_VALUE = r"[ \t]*+:(.*(?:\r?\n[ \t]+.*)*)"
_MESSAGE_ID_LINE = re.compile(r"^[ \t]*+message-id" + _VALUE, re.IGNORECASE | re.MULTILINE)
_FROM_LINE = re.compile(
    r"^[ \t]*+(?:from|return-path|sender)" + _VALUE, re.IGNORECASE | re.MULTILINE
)
_TO_LINE = re.compile(r"^[ \t]*+to" + _VALUE, re.IGNORECASE | re.MULTILINE)
_SUMMARY_TO_LINE = re.compile(r"^[ \t]*+(?:to|cc)[ \t]*+:[^@]*+$", re.IGNORECASE)
# "Message-ID: <" or "from " right before an address: not a recipient.
_NOT_RECIPIENT_BEFORE = re.compile(
    r"(?:message-id|from|sender|envelope-from|mail from)\s*+[:=]?\s*+<?$"
)
_NO_REPLY_SENDER = re.compile(r"no-?reply@", re.IGNORECASE)
_TEMPORARY_TEXT = re.compile(r"temporar|try again later|deferred", re.IGNORECASE)
# SNS folds long JSON lines ("!\n ").
_SNS_FOLD = re.compile(r"!?\r?\n ")


def read_bounce(msg: Message) -> BounceReport | None:
    """The delivery report in ``msg``, or None if ``msg`` is not one."""
    original_ids = tuple(_original_message_ids(msg))
    structured = _read_dsn(msg, original_ids)
    if structured is not None:
        return structured
    forwarded = _forwarded_report(msg)
    if forwarded is not None:
        return _read_dsn(forwarded, tuple(_original_message_ids(forwarded)))
    ses = _read_ses_json(msg, original_ids)
    if ses is not None:
        return ses
    return _read_free_form(msg, original_ids)


def _read_dsn(msg: Message, original_ids: tuple[str, ...]) -> BounceReport | None:
    """RFC 3464: recipients from the delivery-status part(s)."""
    status_texts = [
        part_text(p)
        for p in iter_own_parts(msg)
        if p.get_content_type() in ("message/delivery-status", "message/global-delivery-status")
    ]
    report_type = str(msg.get_param("report-type", "") or "").lower()
    if not status_texts and (
        report_type == "delivery-status" or _DAEMON_FROM.search(decode_header(msg.get("From")))
    ):
        # A status part labelled text/plain, or a report whose MIME boundary is
        # broken so that it reads as one text: look for the fields in the text.
        status_texts = [
            part_text(p)
            for p in iter_own_parts(msg)
            if p.get_content_maintype() in ("text", "multipart")
        ]
    entries = [e for text in status_texts for e in dsn.parse_dsn_fields(text)]
    entries = [e for e in entries if _ADDRESS.search(e.address)][:MAX_RECIPIENTS]
    if not entries:
        return None
    human = _report_text(msg)
    reported: list[BouncedRecipient] = []
    for entry in entries:
        check_budget()
        if entry.action in ("delivered", "relayed", "expanded"):
            continue
        if not entry.action and entry.status[:1] == "2":
            continue
        reported.append(_recipient_from_dsn(entry, human, len(entries)))
    if not reported:
        return BounceReport(BounceOutcome.DELIVERED, (), original_ids)
    outcome = BounceOutcome.DELAYED if all(r.delayed for r in reported) else BounceOutcome.FAILED
    return BounceReport(outcome, tuple(reported), original_ids)


def _forwarded_report(msg: Message) -> Message | None:
    """A delivery-status report attached whole to ``msg`` (a bounce forwarded on)."""
    for part in iter_own_parts(msg):
        if part.get_content_type() != "message/rfc822":
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message) and inner.get_content_type() == "multipart/report":
            return inner
    return None


def _recipient_from_dsn(entry: dsn.DsnRecipient, human: str, count: int) -> BouncedRecipient:
    address = _ADDRESS.search(entry.address)
    addr = address.group(0) if address else entry.address
    # The human-readable part often says more than a terse Diagnostic-Code.
    context = _segment_for(addr, human) if count > 1 else human
    status = dsn.best_status(entry.diagnostic) or entry.status
    if not status or (status.endswith(".0.0") and not dsn.best_status(entry.diagnostic)):
        # Some MTAs (OpenSMTPD) put the remote server's code only in the text part.
        status = dsn.best_status(_lines_about(addr, human), context) or status
    delayed = entry.action == "delayed"
    reason = reasons.reason_for_category(entry.category) or reasons.reason_for(
        entry.diagnostic, status, context
    )
    if delayed and reason in ("onhold", "undefined"):
        reason = "expired"
    if not status:
        status = reasons.status_for_reason(reason, delayed or _temporary(entry.diagnostic))
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


def _read_free_form(msg: Message, original_ids: tuple[str, ...]) -> BounceReport | None:
    """Non-standard reports: decided on sender, subject and wording, read by rules."""
    sender = decode_header(msg.get("From", ""))
    subject = decode_header(msg.get("Subject", ""))
    daemon = bool(_DAEMON_FROM.search(sender)) or not sender.strip()
    bounce_subject = bool(_BOUNCE_SUBJECT.search(subject))
    machine_sent = (
        str(msg.get("Return-Path", "")).strip() in ("<>", "") and msg.get("Return-Path") is not None
    ) or bool(_NO_REPLY_SENDER.search(sender))
    auto_replied = str(msg.get("Auto-Submitted", "")).strip().lower().startswith("auto-replied")
    if REPLY_PREFIX.match(subject) and not daemon and not machine_sent:
        # "Re: Cutting delivery failures" from a person: an answer about
        # deliveries, not a delivery report (those never start with "Re:").
        return None
    if not (daemon or bounce_subject or machine_sent):
        # Every way to be a bounce below needs one of these: a person's mail
        # (most of what comes here) is not read for failure wording at all.
        return None
    report = _report_text(msg)
    failure_text = bool(_FAILURE_TEXT.search(report))
    strong_text = bool(_STRONG_FAILURE_TEXT.search(report))
    is_bounce = (
        (daemon and (bounce_subject or failure_text))
        # RFC 3834 auto-replies say so; a non-daemon saying it needs strong wording.
        or (bounce_subject and failure_text and not auto_replied)
        or (strong_text and (machine_sent or bounce_subject) and not auto_replied)
    )
    if not is_bounce:
        return None
    delayed = bool(_DELAY_TEXT.search(f"{subject}\n{report}")) and not _PERMANENT_TEXT.search(
        report
    )
    addresses = _failed_addresses(msg, report)
    recipients = []
    for address in addresses:
        check_budget()
        segment = _segment_for(address, report) if len(addresses) > 1 else report
        own_lines = _lines_about(address, report)
        status = dsn.best_status(own_lines, segment)
        if not status and len(addresses) == 1:
            status = dsn.best_status(report)
        reason = reasons.reason_for(own_lines, status, segment)
        if delayed and reason in ("onhold", "undefined"):
            reason = "expired"
        if not status:
            status = reasons.status_for_reason(reason, delayed or _temporary(segment))
        recipients.append(
            BouncedRecipient(
                address=address,
                status=status,
                hard=not delayed and reasons.is_hard(reason, status),
                reason=reason,
                diagnostic=" ".join(segment.split())[:500],
                delayed=delayed,
            )
        )
    outcome = BounceOutcome.DELAYED if delayed else BounceOutcome.FAILED
    return BounceReport(outcome, tuple(recipients), original_ids)


def _temporary(text: str) -> bool:
    code = dsn.reply_code(text)
    if code:
        return code.startswith("4")
    return bool(_TEMPORARY_TEXT.search(text))


def _report_text(msg: Message) -> str:
    """The bounce's own human-readable text, cut before any copy of the original."""
    texts: list[str] = []
    for part in iter_own_parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global", "text/rfc822-headers"):
            break
        if ctype == "text/plain" or part.get_content_maintype() == "multipart":
            texts.append(part_text(part))
        elif ctype == "text/html" and not texts:
            texts.append(html_to_text(part_text(part)))
    text = "\n".join(texts)[:_MAX_REPORT_CHARS]
    marker = _ORIGINAL_MARKER.search(text)
    if marker and marker.start() > 0:
        text = text[: marker.start()]
    return text


def _original_text(msg: Message) -> str:
    """Text of the original message's copy: attached part, or what follows the marker."""
    for part in iter_own_parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                inner = payload[0]
                return "\n".join(f"{k}: {v}" for k, v in inner.items())[:_MAX_ORIGINAL_CHARS]
            return part_text(part)[:_MAX_ORIGINAL_CHARS]
        if ctype == "text/rfc822-headers":
            return part_text(part)[:_MAX_ORIGINAL_CHARS]
    texts = [part_text(p) for p in iter_own_parts(msg) if p.get_content_maintype() == "text"]
    text = "\n".join(texts)
    marker = _ORIGINAL_MARKER.search(text)
    return text[marker.start() : marker.start() + _MAX_ORIGINAL_CHARS] if marker else ""


def _original_message_ids(msg: Message) -> list[str]:
    """The original message's Message-ID(s), then the bounce's own In-Reply-To/References."""
    ids: list[str] = []
    for text in (_original_text(msg), _all_text(msg)):
        # The second pass reads reports whose MIME structure is broken.
        for match in _MESSAGE_ID_LINE.finditer(text):
            found = parse_msgid_list(match.group(1))[:1]
            if found:
                ids.extend(found)
                break
        if ids:
            break
    for name in ("In-Reply-To", "References"):
        for value in msg.get_all(name, []) or []:
            ids.extend(reversed(parse_msgid_list(str(value))))
    return list(dict.fromkeys(ids))


def _all_text(msg: Message) -> str:
    """Every undecoded text payload in ``msg``, attached messages included (capped)."""
    chunks: list[str] = []
    room = _MAX_ALL_TEXT_CHARS
    for part in iter_all_parts(msg):
        payload = part.get_payload()
        if isinstance(payload, str):
            chunks.append(payload[:room])
            room -= len(payload) + 1
            if room <= 0:
                break
    return "\n".join(chunks)


def _failed_addresses(msg: Message, report: str) -> list[str]:
    """Recipient addresses named in a free-form report, in order of appearance."""
    excluded = _own_addresses(msg)
    found: list[str] = []
    summarised: list[str] = []
    for match in _ADDRESS.finditer(report):
        if len(found) >= MAX_RECIPIENTS:
            break
        check_budget()
        address = match.group(0).rstrip(".").lower()
        local = address.split("@", 1)[0]
        before = report[max(0, match.start() - 40) : match.start()].lower()
        if address in excluded or _DAEMON_LOCAL.match(local):
            continue
        if _NOT_RECIPIENT_BEFORE.search(before):
            continue
        if _SUMMARY_TO_LINE.match(_line_before(report, match.start())):
            # "Your message  To: a@b  Subject: ...": the original's header, which
            # may name other addresses than the one that failed.
            summarised.append(address)
        elif address not in found:
            found.append(address)
    found = found or list(dict.fromkeys(summarised))[:MAX_RECIPIENTS]
    if found:
        return found
    for value in msg.get_all("X-Failed-Recipients", []) or []:
        for match in _ADDRESS.finditer(str(value)):
            if match.group(0).lower() not in found:
                found.append(match.group(0).lower())
    if found:
        return found
    original = _original_text(msg)
    for line in _TO_LINE.findall(original)[:1]:
        found.extend(m.group(0).lower() for m in _ADDRESS.finditer(line))
    return list(dict.fromkeys(found))[:MAX_RECIPIENTS]


def _line_before(text: str, position: int) -> str:
    """The start of ``position``'s line up to it ("" when longer than ``_MAX_LINE_PREFIX``)."""
    window_start = max(0, position - _MAX_LINE_PREFIX)
    newline = text.rfind("\n", window_start, position)
    if newline < 0 and window_start > 0:
        return ""
    return text[newline + 1 : position]


def _own_addresses(msg: Message) -> set[str]:
    """The sender's addresses (bounce To, original From) and the bounce's own From."""
    values = [str(msg.get(name, "")) for name in ("To", "From", "Return-Path", "Reply-To")]
    original = _original_text(msg)
    values.extend(_FROM_LINE.findall(original))
    return {m.group(0).lower() for v in values for m in _ADDRESS.finditer(v)}


def _segment_for(address: str, text: str) -> str:
    """Lines of ``text`` from each mention of ``address`` up to the next other address."""
    lowered = address.lower()
    lines = text.split("\n")
    keep: list[str] = []
    active = False
    room = _MAX_SEGMENT_CHARS
    for number, line in enumerate(lines):
        if number % 500 == 0:
            check_budget()
        mentioned = {m.group(0).rstrip(".").lower() for m in _ADDRESS.finditer(line)}
        if lowered in mentioned:
            active = True
        elif mentioned and any(not _DAEMON_LOCAL.match(a.split("@")[0]) for a in mentioned):
            active = False
        if active:
            keep.append(line[:room])
            room -= len(line) + 1
            if room <= 0:
                break
    return "\n".join(keep)


def _lines_about(address: str, text: str) -> str:
    """The lines that name ``address``, with the address itself removed."""
    lowered = address.lower()
    lines = [line for line in text.split("\n") if lowered in line.lower()]
    about = "\n".join(re.sub(re.escape(address), " ", line, flags=re.IGNORECASE) for line in lines)
    return about[:_MAX_SEGMENT_CHARS]
