"""Spam complaints: feedback loop reports about a message we sent.

What this module owns: recognising complaints about a message we sent, and
reading from them who complained and the Message-ID complained about:

- RFC 5965 ARF reports (``multipart/report; report-type=feedback-report``),
  also with fields missing, with the report part labelled ``text/plain``, or
  without the multipart/report wrapper (the ``Feedback-Type`` fields are read
  wherever a part holds them);
- X-ARF reports (``X-ARF: yes``), Microsoft's JMRP form (a forwarded copy
  carrying ``X-HmXmrOriginalRecipient``) and Amazon SES complaint
  notifications (JSON);
- an abuse desk forwarding a complaint: complaint wording in the subject or
  the first lines ("spam complaint", "abuse report", "we received a complaint
  about ...", SpamCop) together with the original attached or an abuse-desk
  sender (``abuse@``, ``fbl@`` ...). Delivery reports are never read as
  complaints here, whatever words their errors use.

"Please unsubscribe me" replies written by a person are not complaints;
replytext.py reads those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from worker.matching.bounce import ses_payload
from worker.matching.bounce_text import DAEMON_FROM
from worker.matching.dsn import parse_header_block
from worker.matching.mimetext import body_text, decode_header, iter_own_parts, part_text, payload_of
from worker.matching.msgid import parse_msgid_list

__all__ = ["Complaint", "read_complaint"]

_ADDRESS = re.compile(r"[^\s<>\"';:,()@]{1,64}@[^\s<>\"';:,()@]{1,255}")
_FEEDBACK_TYPE = re.compile(r"^[ \t]*+feedback-type[ \t]*+:", re.IGNORECASE | re.MULTILINE)
_ARF_FIELD = re.compile(
    r"^[ \t]*+(?:user-agent|version|original-rcpt-to|original-mail-from|arrival-date"
    r"|source-ip|reported-domain|removal-recipient)[ \t]*+:",
    re.IGNORECASE | re.MULTILINE,
)
_COMPLAINT_WORDING = re.compile(
    r"spam (?:complaint|report)|abuse (?:report|complaint)|complaint (?:about|regarding"
    r"|concerning|for)|received (?:a|an|the following) (?:spam |abuse )?complaint"
    r"|(?:reported|marked|flagged) (?:this |the following |a |your )?(?:message |e-?mail )?"
    r"as spam|spamcop|feedback loop report|unsolicited (?:commercial |bulk )?e-?mail"
    r" (?:report|complaint)|beschwerde (?:über|wegen)|spam-beschwerde|plainte pour spam"
    r"|signalement (?:de )?spam|queja (?:de|por) spam|denuncia (?:de|per) spam"
    r"|segnalazione (?:di )?spam|klacht over|spamklacht|жалоба на спам",
    re.IGNORECASE,
)
_ABUSE_SENDER = re.compile(
    r"(?:^|[<\s\"])(?:abuse|spam|fbl|feedback(?:-?loop)?|complaints?|spamcop|arf|scomp)[@+.-]",
    re.IGNORECASE,
)
_INLINE_MESSAGE_ID = re.compile(
    r"^[ \t>]*+message-id[ \t]*+:[ \t]*+(<[^>\n]{1,250}>)", re.IGNORECASE | re.MULTILINE
)
_INLINE_TO = re.compile(r"^[ \t>]*+to[ \t]*+:([^\n]{1,500})", re.IGNORECASE | re.MULTILINE)


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
    if not feedback and report_type != "delivery-status":
        # The report part labelled text/plain, or an ARF without its wrapper.
        feedback = [p for p in parts if _holds_feedback_fields(p)]
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
    return _read_ses_complaint(msg) or _read_forwarded_complaint(msg, parts)


def _holds_feedback_fields(part: Message) -> bool:
    if part.get_content_maintype() != "text" or part.get_content_subtype() == "html":
        return False
    text = part_text(part)[:20_000]
    return bool(_FEEDBACK_TYPE.search(text)) and bool(_ARF_FIELD.search(text))


def _read_forwarded_complaint(msg: Message, parts: list[Message]) -> Complaint | None:
    """An abuse desk's complaint (or an X-ARF report) about a message we sent."""
    if _is_delivery_report(msg, parts):
        return None
    x_arf = str(msg.get("X-ARF", "")).strip().lower() in ("yes", "true", "1")
    original = _original_headers(parts)
    from_desk = bool(_ABUSE_SENDER.search(str(msg.get("From", ""))))
    if not (x_arf or original or from_desk):
        # Wording alone is no complaint: a person's reply never gets this far, so
        # its body is read once, by the classifier, not here as well.
        return None
    body = body_text(msg)[:50_000]
    if not x_arf:
        opening = " ".join(body[:1500].split())
        subject = decode_header(msg.get("Subject"))
        if not (_COMPLAINT_WORDING.search(subject) or _COMPLAINT_WORDING.search(opening)):
            return None
    ids = parse_msgid_list(original.get("message-id", ""))
    if not ids and (pasted_id := _INLINE_MESSAGE_ID.search(body)):
        ids = parse_msgid_list(pasted_id.group(1))
    complainant = _first_address(original.get("to", ""))
    if not complainant and (pasted_to := _INLINE_TO.search(body)):
        complainant = _first_address(pasted_to.group(1))
    return Complaint("abuse", complainant, tuple(ids))


def _is_delivery_report(msg: Message, parts: list[Message]) -> bool:
    if str(msg.get_param("report-type", "") or "").lower() == "delivery-status":
        return True
    if any(p.get_content_type() == "message/delivery-status" for p in parts):
        return True
    # The address, not the display name: "ISP Postmaster Team" <spam@...> is a desk.
    # (No email.utils.parseaddr: it recurses once per "(" of a hostile From.)
    return bool(DAEMON_FROM.search(_first_address(decode_header(msg.get("From"))) or "<>"))


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
