"""MIME plumbing for classification: parse raw bytes, decode headers and parts to text.

What this module owns: turning a raw message (any bytes) into a ``Message`` and its
parts into ``str``, whatever the charset and transfer encoding say, including
HTML-only bodies (converted to plain text by ``htmltext``). Nothing here decides
what a message *is*; that lives in the classifier modules.

Messages are parsed with the ``compat32`` policy: it is the most lenient with the
broken headers real MTAs write and never raises on header access; headers are
decoded here explicitly instead.

Caps (each bounds the work hostile mail can cause; what they may cost is said
where they are defined): bytes parsed, header values, headers per part, parts
walked and their nesting. The parser is fed in chunks with the time budget
checked between them, so even the standard library's parser cannot hold a
message past its budget for long.
"""

from __future__ import annotations

import codecs
import email.errors
import email.header
import email.utils
from collections.abc import Iterator
from email.feedparser import BytesFeedParser
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import Compat32
from typing import Any

from worker.matching.budget import check_budget
from worker.matching.htmltext import html_to_text
from worker.matching.msgid import keep_ends

__all__ = [
    "MAX_HEADERS_PER_PART",
    "MAX_PARSED_BYTES",
    "MAX_PARTS",
    "MAX_PART_DEPTH",
    "body_text",
    "cap_header_value",
    "decode_header",
    "html_to_text",
    "iter_all_parts",
    "iter_own_parts",
    "parse_bytes",
    "parse_header_bytes",
    "part_text",
    "sender_address",
]

MAX_PARSED_BYTES = 8 * 1024 * 1024
"""Bytes of a message parsed for classification. What decides what a message is
(its headers, its text, a report's status part and the original's headers) sits
in the first few hundred KB; past 8 MiB there are only attachments. Parsing the
rest cost ~25 ms per MiB of attachment and up to seconds per MiB of tiny parts."""

MAX_HEADER_CHARS = 16_000
"""A header value's length kept (its head). Real values fit easily (long Received,
DKIM and Authentication-Results lines are ~1-2 KB); a To/Cc listing more than
~400 addresses loses the rest, which only helps tell the sender's own addresses
from a bounce's failed ones."""

MAX_SHORT_HEADER_CHARS = 2_000
"""Headers that are short in every real message, read by standard-library code
that is quadratic on long hostile values (``get_param`` on Content-Type,
``decode_header`` on encoded words): their head is kept."""
_SHORT_HEADERS = frozenset(
    {
        "content-type",
        "content-disposition",
        "content-transfer-encoding",
        "subject",
        "from",
        "sender",
        "reply-to",
        "return-path",
        "date",
        "auto-submitted",
        "precedence",
        "message-id",
    }
)

MAX_ID_LIST_CHARS = 64_000
"""References and In-Reply-To keep both ends (``msgid.keep_ends``): a thread adds
its newest id at the end, and the newest are the ones a reply answers (msgid
keeps the last 100). 64,000 characters hold ~800 ordinary ids; a 10,000-id
header keeps its root and its newest ~600."""
_ID_LIST_HEADERS = frozenset({"references", "in-reply-to"})

MAX_HEADERS_PER_PART = 500
"""Header fields kept per part; later ones are dropped. Real messages carry 20-100
(long Received chains ~50). Our readers look headers up by name, each lookup a scan."""

MAX_PARTS = 256
"""MIME leaves walked in one message (attached messages count separately). Real
mail has a handful; a bounce three. A later part is not read."""

MAX_PART_DEPTH = 16
"""Nesting of multiparts (and attached messages) followed. Real mail nests 3-4
deep; a deeper part is read as text (the standard library's parser recurses per
level and failed at ~1,000)."""

MAX_ADDRESS_CHARS = 2_000
"""Characters of a From value handed to ``parseaddr`` (after comments are removed)."""

# Bytes fed to the parser between two budget checks: the parser's worst case
# (a run of tiny parts) reads 16 KiB in about 25 ms.
_FEED_CHUNK = 16 * 1024


def cap_header_value(name: str, value: str) -> str:
    """``value`` cut to the cap for a header named ``name`` (see the caps above)."""
    lowered = name.strip().lower()
    if lowered in _ID_LIST_HEADERS:
        return keep_ends(value, MAX_ID_LIST_CHARS)
    if lowered in _SHORT_HEADERS:
        return value[:MAX_SHORT_HEADER_CHARS]
    return value[:MAX_HEADER_CHARS]


class _CappedPolicy(Compat32):
    """compat32, with every header value capped as the parser reads it."""

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        return name, cap_header_value(name, value)


class _CappedMessage(Message):
    """A compat32 message with capped headers, which knows how deep it is nested.

    A part nested deeper than ``MAX_PART_DEPTH`` reads as text (its Content-Type
    is not kept): the standard library's parser recurses once per multipart or
    attached-message level, and raised RecursionError on a message nesting 2,000
    of them; it now never goes deeper than that.
    """

    depth = 0

    def set_raw(self, name: str, value: Any) -> None:
        if len(self) >= MAX_HEADERS_PER_PART:
            return
        if self.depth > MAX_PART_DEPTH and name.strip().lower() == "content-type":
            return
        super().set_raw(name, value)

    def attach(self, payload: Message | str) -> None:
        # The parser attaches each part to its parent before reading its headers.
        if isinstance(payload, _CappedMessage):
            payload.depth = self.depth + 1
            if payload.depth > MAX_PART_DEPTH:
                payload.set_default_type("text/plain")  # not message/rfc822 in a digest
        super().attach(payload)


_POLICY = _CappedPolicy()


def parse_bytes(raw: bytes) -> Message:
    """Parse raw message bytes leniently (compat32); defects are recorded, not raised.

    At most ``MAX_PARSED_BYTES`` are read; the time budget is checked between
    chunks (raises ``budget.OverBudget``).
    """
    parser = BytesFeedParser(_factory=_CappedMessage, policy=_POLICY)
    data = memoryview(raw)[:MAX_PARSED_BYTES]
    for start in range(0, len(data), _FEED_CHUNK):
        check_budget()
        parser.feed(bytes(data[start : start + _FEED_CHUNK]))
    return parser.close()


def parse_header_bytes(raw: bytes) -> Message:
    """Parse a header block (or a whole message, headers only), capped as ``parse_bytes``."""
    parser = BytesHeaderParser(_class=_CappedMessage, policy=_POLICY)
    return parser.parsebytes(raw[:MAX_PARSED_BYTES])


# Charsets that mailers declare but Python names differently or not at all.
_CHARSET_ALIASES = {
    "unknown-8bit": "cp1252",
    "x-unknown": "cp1252",
    "x-user-defined": "cp1252",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift-jis": "cp932",
    "shift_jis": "cp932",
    "x-sjis": "cp932",
    "iso-2022-jp": "iso2022_jp_ext",
    "utf8": "utf-8",
}


def decode_header(value: object) -> str:
    """Header value as readable text: RFC 2047 words decoded, folding removed."""
    if value is None:
        return ""
    text = str(value)[:MAX_HEADER_CHARS]
    text = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    text = " ".join(line.strip(" \t") for line in text.replace("\r\n", "\n").split("\n"))
    if "=?" not in text:
        return text.strip()
    chunks: list[str] = []
    try:
        for piece, charset in email.header.decode_header(text):
            if isinstance(piece, bytes):
                chunks.append(_decode_bytes(piece, charset))
            else:
                chunks.append(piece)
    except (ValueError, LookupError, email.errors.HeaderParseError):
        # A broken encoded word: keep the undecoded text rather than nothing.
        return text.strip()
    return "".join(chunks).strip()


def payload_of(part: Message) -> list[Any] | str | None:
    """``part.get_payload()``, except that a declared charset cannot make it raise.

    For a text payload holding non-ASCII bytes the email package re-decodes it
    with the part's declared charset and catches only LookupError: a codec such
    as ``idna`` or ``punycode`` then raises UnicodeError, which would quarantine a
    person's reply for a label in its header. Such a payload is read as the
    decoded bytes instead.
    """
    try:
        payload = part.get_payload()
    except (UnicodeError, ValueError):
        data = part.get_payload(decode=True)
        return _decode_bytes(data, None) if isinstance(data, bytes) else None
    if isinstance(payload, str | list):
        return payload
    return None


def part_text(part: Message) -> str:
    """Decoded text of a non-multipart part (transfer encoding and charset undone)."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return _decode_bytes(payload, part.get_content_charset())
    raw = payload_of(part)
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        # message/delivery-status and friends parse into header blocks. Written
        # out as "Name: value" lines, not with as_string(): its header folding
        # runs patterns that are quadratic on long values.
        return "\n\n".join(_header_block(m) if isinstance(m, Message) else str(m) for m in raw)
    return ""


def _header_block(msg: Message) -> str:
    return "\n".join(f"{name}: {value}" for name, value in msg.items())


def iter_own_parts(msg: Message) -> Iterator[Message]:
    """Leaf parts of ``msg`` itself, in order; ``message/*`` parts are leaves, never entered.

    At most ``MAX_PARTS`` leaves, nested at most ``MAX_PART_DEPTH`` deep; the
    time budget is checked per part.
    """
    return _walk(msg, enter_messages=False)


def iter_all_parts(msg: Message) -> Iterator[Message]:
    """Every part of ``msg``, attached messages entered, in order (``Message.walk``, capped)."""
    return _walk(msg, enter_messages=True)


def _walk(msg: Message, *, enter_messages: bool) -> Iterator[Message]:
    """Depth-first, without recursion (a hostile nesting must not reach Python's limit)."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    leaves = 0
    while stack and leaves < MAX_PARTS:
        check_budget()
        part, depth = stack.pop()
        container = part.is_multipart() and (
            enter_messages or part.get_content_maintype() == "multipart"
        )
        if enter_messages:
            yield part  # walk() yields containers too
        if container:
            if depth < MAX_PART_DEPTH:
                payload = payload_of(part)
                listed = payload[:MAX_PARTS] if isinstance(payload, list) else []
                subs = [sub for sub in listed if isinstance(sub, Message)]
                stack.extend((sub, depth + 1) for sub in reversed(subs))
            continue
        leaves += 1
        if not enter_messages:
            yield part


def body_text(msg: Message) -> str:
    """The message's own readable body: text/plain preferred, else HTML as text."""
    plain: list[str] = []
    htmls: list[str] = []
    for part in iter_own_parts(msg):
        ctype = part.get_content_type()
        if _is_attachment(part):
            continue
        if ctype == "text/plain":
            plain.append(part_text(part))
        elif ctype == "text/html":
            htmls.append(part_text(part))
    if any(p.strip() for p in plain):
        return "\n".join(plain)
    if htmls:
        return "\n".join(html_to_text(h) for h in htmls)
    if not msg.is_multipart() and msg.get_content_maintype() == "text":
        return part_text(msg)
    return ""


def sender_address(value: str) -> str:
    """The address in a From-like header value, lower-cased ("" if none).

    Comments are removed first: ``parseaddr`` reads nested comments recursively,
    and a From of a few hundred ``(`` raised RecursionError.
    """
    _, address = email.utils.parseaddr(_without_comments(value[:MAX_ADDRESS_CHARS]))
    return address.lower()


def _without_comments(value: str) -> str:
    """``value`` with RFC 5322 comments (nested, escaped) outside quoted strings removed."""
    out: list[str] = []
    depth, quoted, i, n = 0, False, 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\" and (depth or quoted):
            if not depth:
                out.append(value[i : i + 2])
            i += 2
            continue
        if quoted:
            quoted = ch != '"'
            out.append(ch)
        elif ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if not depth:
                out.append(" ")
        elif not depth:
            quoted = ch == '"'
            out.append(ch)
        i += 1
    return "".join(out)


def _is_attachment(part: Message) -> bool:
    disposition = str(part.get("Content-Disposition", "")).lower()
    return disposition.startswith("attachment")


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Bytes to text with the declared charset, falling back to UTF-8 then cp1252."""
    name = (charset or "").strip().strip('"').lower()
    name = _CHARSET_ALIASES.get(name, name)
    if name:
        try:
            codecs.lookup(name)
        except (LookupError, ValueError):  # ValueError: a NUL inside the declared name
            name = ""
    if name and name not in ("us-ascii", "ascii"):
        try:
            return data.decode(name)
        except (UnicodeError, LookupError):  # UnicodeError: any codec's own refusal
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")
