"""Message-ID parsing: the one place that turns header text into comparable ids.

Canonical form
--------------
The whole project stores and compares Message-IDs in one form, produced here:

    <id-left@id-right>

- angle brackets included, no whitespace anywhere outside a quoted local part;
- the left part (before the last ``@``) is kept exactly, case-sensitive;
- the right part (the domain) is lower-cased;
- a quoted left part whose content is a plain dot-atom loses its quotes
  (``<"abc.1"@x>`` and ``<abc.1@x>`` are the same id, RFC 5322 section 3.2.4).

Only ids with a non-empty left and right part around an ``@`` are ids; anything
else in a header is noise. An id longer than 998 characters (the RFC 5322 line
limit) is dropped.

What this module owns: header text (``str`` or raw ``bytes``) to a list of
canonical ids, robust to folding, nested RFC 5322 comments, quoted local parts,
RFC 2047 encoded words, garbage between ids and bare ids without brackets.
It never raises on header values and never touches I/O.
"""

from __future__ import annotations

import email.errors
import email.header
import re
from email.message import Message

__all__ = [
    "MAX_IDS",
    "MAX_ID_LENGTH",
    "keep_ends",
    "normalize_msgid",
    "parse_msgid_list",
    "reference_candidates",
]

MAX_ID_LENGTH = 998
"""Ids longer than this (brackets included) are dropped: no real MUA makes them."""

MAX_IDS = 100
"""At most this many ids are kept from one header value. References chains grow by
one id per message in a thread; when a chain is longer, the LAST ids are kept, as
they are the most recent messages and the ones a reply most likely answers."""

# Bounds the work done on hostile input: a References header is rarely > 20 KB.
# A longer value keeps both ends (``keep_ends``): a thread appends its newest id
# at the end (the ones kept, ``MAX_IDS``, and the ones a reply answers), and a
# lone id comes first.
_MAX_INPUT_CHARS = 200_000

_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# A bare id (no brackets): no whitespace, no specials that never occur in ids.
# Starts only where a token starts (lookbehind) and never gives back what it
# took (possessive): a long token without "@" is read once, not once per char.
_BARE_ID = re.compile(r"(?<![^\s<>()\",;@])[^\s<>()\",;@]++@[^\s<>()\",;@]++")


def parse_msgid_list(value: str | bytes | None) -> list[str]:
    """Return the canonical Message-IDs found in a header value, in order.

    Works for Message-ID, In-Reply-To and References values (folded or not).
    Duplicates are removed, keeping the first occurrence. When more than
    ``MAX_IDS`` distinct ids are present, the last ``MAX_IDS`` are returned.
    Never raises.
    """
    text = _as_text(value)
    if not text:
        return []
    text = _decode_encoded_words(text)
    bracketed, outside = _scan(text)
    ids = [c for c in (_canonical(raw) for raw in bracketed) if c is not None]
    if not bracketed:
        # Some mailers write a lone id (or a list of them) without brackets.
        ids = [
            c for c in (_canonical(m.group(0)) for m in _BARE_ID.finditer(outside)) if c is not None
        ]
    unique = list(dict.fromkeys(ids))
    return unique[-MAX_IDS:]


def normalize_msgid(value: str) -> str | None:
    """Return the canonical form of one Message-ID, or None if ``value`` is not one.

    ``value`` may carry brackets, surrounding whitespace or comments. A value
    holding zero or several ids is not one id: None.
    """
    ids = parse_msgid_list(value)
    return ids[0] if len(ids) == 1 else None


def reference_candidates(msg: Message) -> list[str]:
    """Return the ids ``msg`` answers, most specific first, de-duplicated.

    In-Reply-To ids come first (the message directly answered), then References
    from the last (newest) to the first. Reads raw header values, so a message
    parsed with any policy works and header parsing errors cannot surface here.
    """
    in_reply_to: list[str] = []
    references: list[str] = []
    for name, value in msg.raw_items():
        lowered = name.lower()
        if lowered == "in-reply-to":
            in_reply_to.extend(parse_msgid_list(str(value)))
        elif lowered == "references":
            references.extend(parse_msgid_list(str(value)))
    ordered = in_reply_to + list(reversed(references))
    return list(dict.fromkeys(ordered))


def _as_text(value: str | bytes | None) -> str:
    """Header value as clean text: bytes decoded, surrogates and folding removed."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        if len(value) > _MAX_INPUT_CHARS * 4:
            value = value[: _MAX_INPUT_CHARS * 2] + b" " + value[-_MAX_INPUT_CHARS * 2 :]
        text = value.decode("utf-8", errors="replace")
    else:
        # compat32 hands over an email.header.Header when a value has 8-bit bytes
        # (str() is its text); the email package keeps undecodable bytes as lone
        # surrogates.
        text = str(value).encode("utf-8", errors="surrogateescape").decode("utf-8", "replace")
    text = keep_ends(text, _MAX_INPUT_CHARS)
    # Folding is CRLF + whitespace; a bare CR or LF in a value is noise too.
    return text.replace("\r", " ").replace("\n", " ")


def keep_ends(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters by dropping its middle.

    A list of ids keeps its first ids (a lone Message-ID, a thread's root) and
    its last (the newest, which a reply answers). Each end is cut at a space,
    so no id is cut in two.
    """
    if len(text) <= limit:
        return text
    head, tail = text[: limit // 4], text[-(limit - limit // 4) :]
    cut = max(head.rfind(space) for space in " \t\n")
    if cut >= 0:
        head = head[:cut]
    spaces = [found for found in (tail.find(space) for space in " \t\n") if found >= 0]
    if spaces:
        tail = tail[min(spaces) + 1 :]
    return f"{head} {tail}"


def _decode_encoded_words(text: str) -> str:
    """Replace RFC 2047 encoded words by their text, or drop them if undecodable."""
    if "=?" not in text:
        return text

    def decode(match: re.Match[str]) -> str:
        try:
            parts = email.header.decode_header(match.group(0))
            return "".join(
                part.decode(charset or "ascii", errors="replace")
                if isinstance(part, bytes)
                else part
                for part, charset in parts
            )
        except (LookupError, ValueError, email.errors.HeaderParseError):
            # Unknown charset or broken encoding: the word carried nothing usable.
            return " "

    return _ENCODED_WORD.sub(decode, text)


def _scan(text: str) -> tuple[list[str], str]:
    """Split text into bracketed id contents and the text outside brackets.

    Handles nested comments and quoted strings outside brackets, and quoted
    strings inside brackets (``<"a>b"@x>``). An unclosed bracket ends at the
    next ``<`` or at the end of the text.
    """
    bracketed: list[str] = []
    outside: list[str] = []
    i, n = 0, len(text)
    quotes_close = True
    while i < n:
        ch = text[i]
        if ch == "(":
            i = _skip_comment(text, i)
            outside.append(" ")
        elif ch == '"':
            end = _skip_quoted(text, i)
            outside.append(text[i:end])
            i = end
        elif ch == "<":
            j = i + 1
            while j < n and text[j] not in "<>":
                # A quote that never closes is an ordinary character here: read as
                # a quoted string it would swallow the closing bracket, and the id
                # it made would not read back as itself (found by the long fuzz run).
                # Once one quote has not closed, no later one can (its scan is a
                # suffix of the first), so they are not scanned again: linear time.
                closes = _closed_quote_end(text, j) if text[j] == '"' and quotes_close else None
                quotes_close = quotes_close and (closes is not None or text[j] != '"')
                j = closes if closes is not None else j + 1
            if j < n and text[j] == ">":
                bracketed.append(text[i + 1 : j])
                i = j + 1
            else:
                bracketed.append(text[i + 1 : j])
                i = j
            outside.append(" ")
        else:
            outside.append(ch)
            i += 1
    return bracketed, "".join(outside)


def _closed_quote_end(text: str, start: int) -> int | None:
    """Index past the quoted string opening at ``start``, or None if it never closes."""
    i, n = start + 1, len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return None


def _skip_comment(text: str, start: int) -> int:
    """Index just past the (possibly nested) comment opening at ``start``."""
    depth, i, n = 0, start, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def _skip_quoted(text: str, start: int) -> int:
    """Index just past the quoted string opening at ``start`` (or end of text)."""
    end = _closed_quote_end(text, start)
    return len(text) if end is None else end


def _canonical(raw: str) -> str | None:
    """Canonical ``<left@domain>`` for the content of one id, or None."""
    left, right = _split_id(raw)
    if not left or not right:
        return None
    if left.startswith('"') and left.endswith('"') and len(left) >= 2:
        inner = left[1:-1]
        if _DOT_ATOM.fullmatch(inner):
            left = inner
    if not _printable(left) or not _printable(right) or "@" in right:
        return None
    canonical = f"<{left}@{right.lower()}>"
    if len(canonical) > MAX_ID_LENGTH:
        return None
    return canonical


def _split_id(raw: str) -> tuple[str, str]:
    """Split id content at its last unquoted ``@``; whitespace outside quotes removed."""
    chars: list[str] = []
    at = -1
    i, n = 0, len(raw)
    while i < n:
        ch = raw[i]
        if ch == '"':
            end = _skip_quoted(raw, i)
            chars.append(raw[i:end])
            i = end
            continue
        if ch.isspace():
            i += 1
            continue
        if ch == "@":
            at = len(chars)
        chars.append(ch)
        i += 1
    if at < 0:
        return "", ""
    return "".join(chars[:at]), "".join(chars[at + 1 :])


def _printable(part: str) -> bool:
    """True if ``part`` has no control or replacement characters."""
    return all(ch.isprintable() and ch != "\ufffd" for ch in part)
