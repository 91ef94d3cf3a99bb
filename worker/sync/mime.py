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
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser

from worker.matching.msgid import normalize_msgid, parse_msgid_list, reference_candidates
from worker.sync.base import HeaderSummary, OutgoingMessage


def summarize_headers(raw_headers: bytes, provider_fallback: str) -> HeaderSummary:
    """Build the engine's view of a message from its raw header block."""
    msg: Message = BytesHeaderParser(policy=policy.compat32).parsebytes(raw_headers)
    ids = parse_msgid_list(msg.get("Message-ID"))
    rfc_id = ids[0] if ids else None
    if rfc_id is not None:
        provider_id = f"mid:{rfc_id}"
    else:
        provider_id = "hdr:" + hashlib.sha256(raw_headers + provider_fallback.encode()).hexdigest()
    headers = {k.lower(): str(v) for k, v in msg.items()}
    _, from_addr = email.utils.parseaddr(headers.get("from", ""))
    return HeaderSummary(
        provider_id=provider_id,
        fetch_ref="",
        rfc_message_id=rfc_id,
        from_addr=from_addr.lower() or None,
        subject=headers.get("subject"),
        candidates=reference_candidates(msg),
        headers=headers,
    )


def build_mime(message: OutgoingMessage) -> bytes:
    """The exact bytes we hand to SMTP and file in Sent."""
    msg = EmailMessage(policy=policy.SMTP)
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
        msg[name] = value
    msg.set_content(message.text)
    msg.add_alternative(message.html, subtype="html")
    # Adding a file turns the body into multipart/mixed around the alternatives.
    for attachment in message.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        msg.add_attachment(
            attachment.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=attachment.filename,
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
