"""Header summaries from providers that hand us header *values*, not a raw header block.

Gmail's metadata format, Graph's properties and EWS items give headers one by
one, already as text (Graph and EWS decode them; Gmail may leave RFC 2047
encoded-words). `summary_from_headers` turns them into the engine's
`HeaderSummary` with the same rules as `worker.sync.mime.summarize_headers`:
candidates from In-Reply-To then References (newest first), the canonical
Message-ID, the sender's address, a decoded subject. It never raises on odd
values: a header that cannot be decoded is kept as it came.
"""

from __future__ import annotations

import email.errors
import email.utils
from datetime import datetime
from email.header import decode_header, make_header
from email.message import Message

from worker.matching.mimetext import cap_header_value, sender_address
from worker.matching.msgid import parse_msgid_list, reference_candidates
from worker.sync.base import HeaderSummary


def decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded; anything undecodable left as it was."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        # HeaderParseError: a broken base64 encoded-word (found by tests/fuzz).
        return value


def summary_from_headers(
    headers: dict[str, str],
    *,
    provider_id: str | None,
    fetch_ref: str,
    size: int | None = None,
    received_at: datetime | None = None,
    thread_id: str | None = None,
) -> HeaderSummary:
    """The engine's view of a message. `headers` has lower-cased names.

    Without a `provider_id`, the message is named by its RFC Message-ID
    (``mid:<id>``, stable when the provider's own id changes on a move), else by
    `fetch_ref`.
    """
    # Capped as classification caps them: a provider hands over any length.
    headers = {name: cap_header_value(name, str(value)) for name, value in headers.items()}
    message = Message()
    for name in ("in-reply-to", "references"):
        if headers.get(name):
            message[name] = headers[name]
    ids = parse_msgid_list(headers.get("message-id"))
    rfc_id = ids[0] if ids else None
    if provider_id is None:
        provider_id = f"mid:{rfc_id}" if rfc_id else f"ref:{fetch_ref}"
    from_addr = sender_address(decode_words(headers.get("from", "")))
    subject = headers.get("subject")
    return HeaderSummary(
        provider_id=provider_id,
        fetch_ref=fetch_ref,
        rfc_message_id=rfc_id,
        from_addr=from_addr or None,
        subject=decode_words(subject) if subject is not None else None,
        candidates=reference_candidates(message),
        headers=dict(headers),
        size=size,
        received_at=received_at,
        thread_id=thread_id or None,
    )
