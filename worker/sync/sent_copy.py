"""A message found in a mailbox's Sent folder: the few headers and the text we read.

Mail sent from Gmail or Outlook itself is recognised by our tokens in its body
(`worker.sync.sent_mail`), so a sent copy is read for its addresses, ids and
subject, and for the text of its HTML and plain-text parts only: attachments
are never decoded, and what is read is bounded (`MAX_SENT_BYTES` of the
message, `MAX_TEXT_CHARS` of text). Providers that can hand the parts over
already decoded (Gmail's ``format=full``) build a `SentCopy` themselves; the
others give the message's first bytes to `sent_copy_from_bytes`.

Nothing here does I/O or knows our tables.
"""

from __future__ import annotations

from datetime import datetime
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from worker.matching.msgid import normalize_msgid
from worker.sync.base import HeaderSummary, SentCopy
from worker.sync.headers import decode_words

# Our links and pixel sit in the body a person wrote, near its top or its end; a
# sent copy larger than this is read up to here (the rest is attachments).
MAX_SENT_BYTES = 512 * 1024
MAX_TEXT_CHARS = 256 * 1024
TEXT_TYPES = ("text/html", "text/plain")
# Set in the credentials a provider is opened with while an add-on draft waits
# (worker.sync.sent_mail.sent_wanted): where its listing of Sent starts.
READ_SENT_SINCE = "read_sent_since"


def read_sent_since(credentials: dict[str, Any]) -> datetime | None:
    """When a provider's listing of Sent starts (see `sent_wanted`); None: do not list it."""
    value = credentials.get(READ_SENT_SINCE)
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def in_sent(
    fetch_ref: str, provider_id: str | None = None, thread_id: str | None = None
) -> HeaderSummary:
    """A message listed in Sent: no headers read yet (`read_sent`, or `fetch`'s first
    bytes, reads it once); never matched as a reply."""
    return HeaderSummary(
        provider_id=(provider_id or f"sent:{fetch_ref}")[:500],
        fetch_ref=fetch_ref,
        rfc_message_id=None,
        from_addr=None,
        subject=None,
        candidates=[],
        headers={},
        thread_id=thread_id,
        in_sent=True,
    )


def addresses(values: list[str]) -> list[str]:
    """Lower-cased addresses of header values, in order, without repeats."""
    found: list[str] = []
    for _, raw in getaddresses(values):
        address = raw.strip().lower()
        if "@" in address and address not in found:
            found.append(address)
    return found


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


def from_headers(
    headers: list[tuple[str, str]], text: str, thread_id: str | None = None
) -> SentCopy:
    """A SentCopy from (name, value) header pairs and the text already decoded."""
    first: dict[str, str] = {}
    to: list[str] = []
    cc: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        first.setdefault(lowered, value)
        if lowered == "to":
            to.append(value)
        elif lowered == "cc":
            cc.append(value)
    return SentCopy(
        message_id=normalize_msgid(first.get("message-id", "")),
        subject=decode_words(first.get("subject", ""))[:998],
        to=addresses(to),
        cc=addresses(cc),
        text=text[:MAX_TEXT_CHARS],
        sent_at=_date(first.get("date")),
        thread_id=thread_id,
    )


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return payload.decode("utf-8", errors="replace")


def sent_copy_from_bytes(raw: bytes, thread_id: str | None = None) -> SentCopy:
    """Read the first `MAX_SENT_BYTES` of a sent message (a cut-off message reads as far
    as it goes: our links are in the text parts, before any attachment)."""
    message = message_from_bytes(raw[:MAX_SENT_BYTES], policy=policy.compat32)
    texts: list[str] = []
    size = 0
    for part in message.walk():
        if part.is_multipart() or part.get_content_type() not in TEXT_TYPES:
            continue
        if part.get_filename():  # a text file attached, not the body
            continue
        text = _part_text(part)
        texts.append(text)
        size += len(text)
        if size >= MAX_TEXT_CHARS:
            break
    headers = [(str(k), str(v)) for k, v in message.raw_items()]
    return from_headers(headers, "\n".join(texts), thread_id)
