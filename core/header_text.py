"""Text that ends up in a mail header: one line, no control characters.

A subject, a display name, an address or an attachment's name is written into
a header line of the message we build (`worker.sync.mime.build_mime`). A line
break in it would end the header early (header injection) or, with Python's
email package, make building the message raise; a NUL or other control
character is passed through into the raw bytes. So every such field is checked
where a person types it (the API's 422 and the forms' error summary name the
field) with `header_text_problem`, and text filled in at send time from stored
data (a prospect's name in ``{{first_name}}``) is made one line with
`flatten_header_text` instead.

Refused: every character Unicode files as a control (``Cc``: C0 including tab,
CR, LF, NUL; DEL; C1 including NEL U+0085), a line or paragraph separator
(``Zl``/``Zp``: U+2028, U+2029) or an unpaired surrogate (``Cs``: no encoding
can write it). These are exactly the characters `str.splitlines` breaks on,
plus the controls that break nothing but still do not belong in a header.

Must never: let a character listed above through `flatten_header_text`.
"""

from __future__ import annotations

import unicodedata

_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _refused(ch: str) -> bool:
    return unicodedata.category(ch) in _REFUSED_CATEGORIES


def header_text_problem(value: str) -> str | None:
    """What makes `value` unfit for a header line, in words for the person who typed it.

    None when it is fine. Names the first offending character by its code point,
    since most of them are invisible.
    """
    for ch in value:
        if not _refused(ch):
            continue
        if ch in _LINE_BREAKS:
            return f"must be one line (it contains a line break, U+{ord(ch):04X})"
        return f"contains a control character (U+{ord(ch):04X}), which mail headers cannot carry"
    return None


def check_header_text(value: str) -> str:
    """`value` unchanged, or ValueError saying what is wrong (for pydantic validators)."""
    problem = header_text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def flatten_header_text(value: str) -> str:
    """`value` on one line: each run of refused characters, with the spaces around it,
    becomes one space; the ends are trimmed."""
    if not any(_refused(ch) for ch in value):
        return value
    out: list[str] = []
    gap = False
    for ch in value:
        if _refused(ch):
            while out and out[-1] == " ":
                out.pop()
            gap = True
        elif gap and ch == " ":
            continue
        else:
            if gap:
                out.append(" ")
                gap = False
            out.append(ch)
    return "".join(out).strip()
