"""Reading IMAP FETCH answers by what they mean, not by the bytes one server sends.

A FETCH answer names each item it carries, and RFC 3501 lets servers spell the
same item several ways. For ``BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO)]``
real servers answer (tests/fixtures/imap/ holds the captured bytes)::

    Dovecot 2.3     BODY[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO)] {n}
    Courier 5.0     BODY[HEADER.FIELDS ("MESSAGE-ID" "IN-REPLY-TO")] {n}
    Mailutils 3.15  BODY[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO)] {n}   (header lines
                    written back in the case they were asked for: "MESSAGE-ID: <…>")

and the grammar allows more: any case, field names as atoms, quoted strings or
literals (``header-fld-name = astring``), a partial-fetch origin
(``BODY[…]<0>``), the data as a literal, a quoted string or NIL, items in any
order, unsolicited items (FLAGS) in the same or a separate response::

    msg-att-static  = … / "RFC822.HEADER" SP nstring
                    / "BODY" section ["<" number ">"] SP nstring
    section         = "[" [section-spec] "]"
    section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
    header-list     = "(" header-fld-name *(SP header-fld-name) ")"

So an item name is parsed into (name, section, field names, origin), field names
compared as a case-insensitive set, and the header block is the item that best
answers the request: HEADER.FIELDS with exactly the names asked for, else one
with other names (a server that returned fewer or more), else the whole header
(BODY[HEADER], RFC822.HEADER). `None` means the answer holds no header block at
all: the caller treats that as an error, never as "a message without headers".

Parsing is linear in the length of the item name; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Items other than a header block that an answer to our request may carry.
_ASKED_OTHERWISE = frozenset({"RFC822.SIZE", "INTERNALDATE"})


@dataclass(frozen=True)
class FetchItem:
    """An item name as meant: ``BODY[HEADER.FIELDS ("A" b)]<0>`` = BODY, HEADER.FIELDS, {A,B}, 0."""

    name: str
    section: str | None  # None: no brackets (RFC822.SIZE); "": BODY[] (the whole message)
    fields: frozenset[str]
    origin: int | None


def parse_item(key: bytes | str) -> FetchItem | None:
    """Parse a FETCH item name; None when it is not one (a malformed bracket, say)."""
    text = key.decode("latin-1") if isinstance(key, bytes) else key
    text = text.strip()
    opening = text.find("[")
    if opening < 0:
        return FetchItem(text.upper(), None, frozenset(), None)
    closing = text.rfind("]")
    if closing < opening:
        return None
    name = text[:opening].upper()
    if name.endswith(".PEEK"):
        name = name[: -len(".PEEK")]
    after = text[closing + 1 :].strip()
    if after and not (after.startswith("<") and after.endswith(">") and after[1:-1].isdigit()):
        return None
    origin = int(after[1:-1]) if after else None
    spec = text[opening + 1 : closing].strip()
    section, _, rest = spec.partition(" ")
    fields: frozenset[str] = frozenset()
    rest = rest.strip()
    if rest:
        if not (rest.startswith("(") and rest.endswith(")")):
            return None
        names = _astrings(rest[1:-1])
        if names is None:
            return None
        fields = frozenset(n.upper() for n in names)
    return FetchItem(name, section.upper(), fields, origin)


def _astrings(text: str) -> list[str] | None:
    """Split ``A "B" "C \\"D\\""`` into names; None on an unterminated quote. One pass."""
    names: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == " ":
            i += 1
            continue
        if char == '"':
            i += 1
            value: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            if i >= n:
                return None
            names.append("".join(value))
            i += 1
            continue
        end = text.find(" ", i)
        end = n if end < 0 else end
        names.append(text[i:end])
        i = end
    return names


def header_fields_request(fields: Iterable[str]) -> bytes:
    """The FETCH item that asks for these header fields without setting \\Seen."""
    return f"BODY.PEEK[HEADER.FIELDS ({' '.join(f.upper() for f in fields)})]".encode()


def find_header_block(data: Mapping[bytes, object], fields: Iterable[str]) -> bytes | None:
    """The header block in one message's FETCH answer that answers a HEADER.FIELDS request.

    Returns the raw header lines (b"" when the server says the message has none of
    them: an empty block or NIL), or None when the answer carries no header block.
    """
    wanted = frozenset(f.upper() for f in fields)
    best: tuple[int, object] | None = None
    for key, value in data.items():
        item = parse_item(key)
        if item is None:
            continue
        if item.name == "BODY" and item.section == "HEADER.FIELDS":
            rank = 0 if item.fields == wanted else 1
        elif (item.name == "BODY" and item.section == "HEADER") or item.name == "RFC822.HEADER":
            rank = 2
        else:
            continue
        if best is None or rank < best[0]:
            best = (rank, value)
    if best is None:
        return None
    return _as_bytes(best[1])


def find_message(data: Mapping[bytes, object]) -> bytes | None:
    """The whole message (or its first octets) in a FETCH answer to ``BODY.PEEK[]<0.n>``."""
    for key, value in data.items():
        item = parse_item(key)
        if item is not None and item.name == "BODY" and item.section == "" and value is not None:
            found = _as_bytes(value)
            if found is not None:
                return found
    return None


def answers_request(data: Mapping[bytes, object]) -> bool:
    """True when a message's FETCH data holds any item we asked for (not only FLAGS/SEQ).

    A server may send unsolicited FETCH responses (a flag changed) for messages it
    also answers, or instead of answering an expunged one; only an answer that
    carries what we asked for says anything about the message's headers.
    """
    for key in data:
        item = parse_item(key)
        if item is None:
            continue
        if item.name in _ASKED_OTHERWISE or item.name == "RFC822.HEADER":
            return True
        if item.name == "BODY" and item.section is not None:
            return True
    return False


def _as_bytes(value: object) -> bytes | None:
    if value is None:  # NIL: the server has nothing for this section
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return None
