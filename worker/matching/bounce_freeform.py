"""Free-form bounces: the reports many MTAs send instead of RFC 3464, read by general rules.

qmail, Exim, old Sendmail, Exchange 2003, Domino, carriers ... each word their
reports their own way, so they are read with rules rather than one parser per
MTA:

    a bounce    = sent by a daemon (or with an empty Return-Path, or from a
                  no-reply address) and worded or titled as a failure; never a
                  person's "Re:" about deliveries, never an RFC 3834 auto-reply
                  without strong failure wording
    recipients  = addresses named in the report text, minus the sender's own
                  and the daemons' (fallbacks: X-Failed-Recipients, original To)
    diagnostic  = the report lines about each recipient, up to the next one
    status      = the most specific enhanced code in the diagnostic (dsn.py)
    reason/hard = reasons.py; "still retrying" wording makes them delayed

Most mail that reaches the classifier is a person's: without a daemon sender,
a bounce subject or a machine sender it is not read for failure wording at all.
"""

from __future__ import annotations

import re
from email.message import Message

from worker.matching import dsn, reasons
from worker.matching.bounce_report import BouncedRecipient, BounceOutcome, BounceReport
from worker.matching.bounce_text import (
    ADDRESS,
    DAEMON_FROM,
    DAEMON_LOCAL,
    FROM_LINE,
    MAX_RECIPIENTS,
    TO_LINE,
    lines_about,
    original_text,
    report_text,
    segment_for,
    temporary,
)
from worker.matching.budget import check_budget
from worker.matching.mimetext import decode_header
from worker.matching.replytext import REPLY_PREFIX

# How far back the start of an address's line is looked for ("To: a@b" lines).
_MAX_LINE_PREFIX = 200
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
_SUMMARY_TO_LINE = re.compile(r"^[ \t]*+(?:to|cc)[ \t]*+:[^@]*+$", re.IGNORECASE)
# "Message-ID: <" or "from " right before an address: not a recipient.
_NOT_RECIPIENT_BEFORE = re.compile(
    r"(?:message-id|from|sender|envelope-from|mail from)\s*+[:=]?\s*+<?$"
)
_NO_REPLY_SENDER = re.compile(r"no-?reply@", re.IGNORECASE)


def read_free_form(msg: Message, original_ids: tuple[str, ...]) -> BounceReport | None:
    """Non-standard reports: decided on sender, subject and wording, read by rules."""
    sender = decode_header(msg.get("From", ""))
    subject = decode_header(msg.get("Subject", ""))
    daemon = bool(DAEMON_FROM.search(sender)) or not sender.strip()
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
    report = report_text(msg)
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
        segment = segment_for(address, report) if len(addresses) > 1 else report
        own_lines = lines_about(address, report)
        status = dsn.best_status(own_lines, segment)
        if not status and len(addresses) == 1:
            status = dsn.best_status(report)
        reason = reasons.reason_for(own_lines, status, segment)
        if delayed and reason in ("onhold", "undefined"):
            reason = "expired"
        if not status:
            status = reasons.status_for_reason(reason, delayed or temporary(segment))
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


def _failed_addresses(msg: Message, report: str) -> list[str]:
    """Recipient addresses named in a free-form report, in order of appearance."""
    excluded = _own_addresses(msg)
    found: list[str] = []
    summarised: list[str] = []
    for match in ADDRESS.finditer(report):
        if len(found) >= MAX_RECIPIENTS:
            break
        check_budget()
        address = match.group(0).rstrip(".").lower()
        local = address.split("@", 1)[0]
        before = report[max(0, match.start() - 40) : match.start()].lower()
        if address in excluded or DAEMON_LOCAL.match(local):
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
        for match in ADDRESS.finditer(str(value)):
            if match.group(0).lower() not in found:
                found.append(match.group(0).lower())
    if found:
        return found
    original = original_text(msg)
    for line in TO_LINE.findall(original)[:1]:
        found.extend(m.group(0).lower() for m in ADDRESS.finditer(line))
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
    original = original_text(msg)
    values.extend(FROM_LINE.findall(original))
    return {m.group(0).lower() for v in values for m in ADDRESS.finditer(v)}
