"""MIME building and header summaries shared by every provider.

`build_mime` makes the exact bytes a provider sends (SMTP, Gmail's raw send);
`summarize_headers` turns a raw header block into the engine's `HeaderSummary`.
"""

from __future__ import annotations

import email.utils
import hashlib
import secrets
import time
from datetime import UTC, datetime
from email import policy
from email.errors import HeaderParseError
from email.message import EmailMessage

from core.header_text import flatten_header_text, header_text_problem
from worker.matching.mimetext import parse_header_bytes, sender_address
from worker.matching.msgid import normalize_msgid, parse_msgid_list, reference_candidates
from worker.sync.base import HeaderSummary, OutgoingMessage

# SMTP line endings; values we set with `set_raw` (extra headers) are written as
# given instead of being re-folded by the header parser.
_POLICY = policy.SMTP.clone(refold_source="none")


def summarize_headers(raw_headers: bytes, provider_fallback: str) -> HeaderSummary:
    """Build the engine's view of a message from its raw header block.

    Header values are capped as classification caps them (``mimetext``), so a
    hostile header costs the listing no more than it costs the classifier.
    """
    msg = parse_header_bytes(raw_headers)
    ids = parse_msgid_list(msg.get("Message-ID"))
    rfc_id = ids[0] if ids else None
    if rfc_id is not None:
        provider_id = f"mid:{rfc_id}"
    else:
        provider_id = "hdr:" + hashlib.sha256(raw_headers + provider_fallback.encode()).hexdigest()
    headers = {k.lower(): str(v) for k, v in msg.items()}
    return HeaderSummary(
        provider_id=provider_id,
        fetch_ref="",
        rfc_message_id=rfc_id,
        from_addr=sender_address(headers.get("from", "")) or None,
        subject=headers.get("subject"),
        candidates=reference_candidates(msg),
        headers=headers,
    )


class MessageBuildError(ValueError):
    """The message cannot be written as MIME (a header with a line break, say).

    Permanent: the same message fails the same way every time, so the sender
    records a failed send with this reason instead of retrying.
    """


def check_message(message: OutgoingMessage) -> None:
    """Refuse header text no input check let through (legacy rows, stored data).

    Cheap (no MIME is built): the sender calls it before opening a mailbox.

    Raises:
        MessageBuildError: naming the field and the character.
    """
    fields: list[tuple[str, str]] = [
        ("subject", message.subject),
        ("from name", message.from_name or ""),
        ("from address", message.from_addr),
        ("message id", message.message_id),
        ("in-reply-to", message.in_reply_to or ""),
        *(("to address", a) for a in message.to),
        *(("cc address", a) for a in message.cc),
        *(("reference", r) for r in message.references),
        *((f"header {name}", f"{name}{value}") for name, value in message.extra_headers.items()),
    ]
    for field, value in fields:
        problem = header_text_problem(value)
        if problem is not None:
            raise MessageBuildError(f"the {field} {problem}")


def build_mime(message: OutgoingMessage) -> bytes:
    """The exact bytes we hand to SMTP and file in Sent.

    Raises:
        MessageBuildError: the message cannot be written (its reason says why).
    """
    check_message(message)
    try:
        return _build(message)
    except (ValueError, TypeError, LookupError, UnicodeError, HeaderParseError) as exc:
        # Whatever the email package refuses, it refuses every time: not worth a retry.
        raise MessageBuildError(f"the message cannot be written as MIME: {exc}") from exc


def _build(message: OutgoingMessage) -> bytes:
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = email.utils.formataddr((message.from_name or "", message.from_addr))
    msg["To"] = ", ".join(message.to)
    if message.cc:
        msg["Cc"] = ", ".join(message.cc)
    msg["Subject"] = message.subject
    msg["Date"] = email.utils.format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message.message_id
    if message.in_reply_to:
        msg["In-Reply-To"] = message.in_reply_to
    if message.references:
        msg["References"] = " ".join(message.references)
    for name, value in message.extra_headers.items():
        # Written as given, folded only between list items (List-Unsubscribe's
        # <https…>, <mailto…>): left to the email package, a long URL is made
        # RFC 2047 encoded words, which no mail client reads back as a URL.
        long_line = len(name) + 2 + len(value) > 78
        msg.set_raw(name, value.replace(">, <", ">,\r\n <") if long_line else value)
    msg.set_content(message.text)
    msg.add_alternative(message.html, subtype="html")
    # Adding a file turns the body into multipart/mixed around the alternatives.
    for attachment in message.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(
            attachment.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            # An attachment's name is only a label: made one line rather than refused.
            filename=flatten_header_text(attachment.filename) or "attachment",
        )
    return msg.as_bytes()


def new_message_id(from_addr: str) -> str:
    """A fresh, unique Message-ID on the sender's domain, canonical."""
    domain = from_addr.rpartition("@")[2] or "sightline.invalid"
    # 80 random bits: unique without coordination between processes.
    made = f"<{int(time.time())}.{secrets.token_hex(10)}.sl@{domain}>"
    canonical = normalize_msgid(made)
    if canonical is None:  # pragma: no cover - make_msgid always makes a valid id
        raise ValueError(f"could not make a Message-ID for {from_addr!r}")
    return canonical
