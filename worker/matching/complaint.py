"""Spam complaints: feedback loop reports about a message we sent.

What this module owns: recognising RFC 5965 ARF reports
(``multipart/report; report-type=feedback-report``), Microsoft's JMRP form (a
forwarded copy carrying ``X-HmXmrOriginalRecipient``) and Amazon SES complaint
notifications (JSON), and reading from them who complained and the Message-ID
of the message complained about. "Please unsubscribe me" replies written by a
person are not complaints; replytext.py reads those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from worker.matching.bounce import ses_payload
from worker.matching.dsn import parse_header_block
from worker.matching.mimetext import iter_own_parts, part_text, payload_of
from worker.matching.msgid import parse_msgid_list

__all__ = ["Complaint", "read_complaint"]

_ADDRESS = re.compile(r"[^\s<>\"';:,()@]{1,64}@[^\s<>\"';:,()@]{1,255}")


@dataclass(frozen=True)
class Complaint:
    """A feedback report: its type, the complaining address, the original ids."""

    feedback_type: str
    complainant: str
    original_message_ids: tuple[str, ...]


def read_complaint(msg: Message) -> Complaint | None:
    """The complaint ``msg`` carries, or None if it is not a feedback report."""
    report_type = str(msg.get_param("report-type", "") or "").lower()
    parts = list(iter_own_parts(msg))
    feedback = [p for p in parts if p.get_content_type() == "message/feedback-report"]
    if feedback or report_type == "feedback-report":
        fields: dict[str, str] = {}
        for part in feedback:
            fields.update(parse_header_block(part_text(part)))
        complainant = _first_address(
            fields.get("original-rcpt-to", "") or fields.get("removal-recipient", "")
        )
        original = _original_headers(parts)
        if not complainant:
            complainant = _first_address(original.get("to", ""))
        return Complaint(
            feedback_type=fields.get("feedback-type", "abuse").strip().lower() or "abuse",
            complainant=complainant,
            original_message_ids=tuple(parse_msgid_list(original.get("message-id", ""))),
        )
    original = _original_headers(parts)
    if "x-hmxmroriginalrecipient" in original:
        return Complaint(
            feedback_type="abuse",
            complainant=_first_address(original["x-hmxmroriginalrecipient"]),
            original_message_ids=tuple(parse_msgid_list(original.get("message-id", ""))),
        )
    return _read_ses_complaint(msg)


def _read_ses_complaint(msg: Message) -> Complaint | None:
    data = ses_payload(msg)
    if data is None or str(data.get("notificationType", "")).lower() != "complaint":
        return None
    complaint = data.get("complaint")
    complainant = ""
    feedback_type = "abuse"
    if isinstance(complaint, dict):
        feedback_type = str(complaint.get("complaintFeedbackType") or "abuse").lower()
        for item in complaint.get("complainedRecipients", []) or []:
            if isinstance(item, dict) and item.get("emailAddress"):
                complainant = str(item["emailAddress"]).lower()
                break
    ids: list[str] = []
    mail = data.get("mail")
    if isinstance(mail, dict):
        for header in mail.get("headers", []) or []:
            if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
                ids.extend(parse_msgid_list(str(header.get("value", ""))))
    return Complaint(feedback_type, complainant, tuple(ids))


def _original_headers(parts: list[Message]) -> dict[str, str]:
    """Lower-cased headers of the attached original (message/rfc822 or headers only)."""
    for part in parts:
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = payload_of(part)
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return {k.lower(): str(v) for k, v in payload[0].items()}
        if ctype == "text/rfc822-headers":
            return parse_header_block(part_text(part))
    return {}


def _first_address(value: str) -> str:
    match = _ADDRESS.search(value)
    return match.group(0).lower() if match else ""
