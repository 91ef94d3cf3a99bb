"""A bounce's text: its own words, the copy of the original it carries, and each address's part.

Every bounce reader needs the same few cuts of a report: the report's own
human-readable text (cut where the copy of the original message starts), that
copy (for the original's Message-ID, From and To), and, per recipient, the
lines that name it and its segment up to the next recipient. All of them run
on hostile input: every pattern here is linear (line-anchored patterns use
``[ \\t]``, never ``\\s``, and possessive runs), every cut is capped
(`MAX_RECIPIENTS`, and the ``_MAX_*_CHARS`` limits), and long loops check the
classification budget. This module decides nothing about what a report
means: `bounce` and `bounce_freeform` do.
"""

from __future__ import annotations

import re
from email.message import Message

from worker.matching import dsn
from worker.matching.budget import check_budget
from worker.matching.mimetext import (
    html_to_text,
    iter_all_parts,
    iter_own_parts,
    part_text,
    payload_of,
)
from worker.matching.msgid import parse_msgid_list

# Local part bounded (RFC 5321: 64) so that long runs of address-like text, such
# as base64 lines, cost linear time instead of quadratic.
ADDRESS = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{0,63}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+"
)
# A report's own text is short; what is longer is a copy of something else.
_MAX_REPORT_CHARS = 100_000
# The copy of the original message read for its headers (Message-ID, From, To):
# they are at its start, so a long copy's tail holds nothing we read.
_MAX_ORIGINAL_CHARS = 200_000
# Undecoded payloads read when a report's MIME structure is broken.
_MAX_ALL_TEXT_CHARS = 500_000
# Failed recipients read from one report. We send each message to one prospect
# (and a few on CC); a report listing more names addresses that are not ours.
MAX_RECIPIENTS = 50
# The text read about one recipient (its lines, its segment of the report):
# an MTA's diagnostic is a few lines; far text is about something else.
_MAX_SEGMENT_CHARS = 10_000
DAEMON_LOCAL = re.compile(
    r"^(?:mailer-daemon|postmaster|post_master|poostmaster|mail-daemon|mailerdaemon"
    r"|double-bounce|no-?reply|noreply|bounce[s]?|daemon|root|mail\.delivery\.system)$",
    re.IGNORECASE,
)
DAEMON_FROM = re.compile(
    r"mailer-daemon|postmaster|post_master|mail delivery|mail\.delivery|delivery subsystem"
    r"|mail administrator|ndr administrator|mailer daemon|interscan|system administrator"
    r"|mail deliver system|mdaemon|<>",
    re.IGNORECASE,
)
# Where the copy of the original message starts inside a free-form report.
# Line-anchored, so spaces are [ \t] (\s would run across blank lines: 400 of
# them took 1.3 s, 800 10 s) and possessive (a ruler between two runs of
# spaces must not be re-split on failure).
_ORIGINAL_MARKER = re.compile(
    r"^[ \t]*+(?:[-=_*]++[ \t]*+)?(?:below this line is a copy of the message"
    r"|original message(?: follows)?|returned message|unsent message follows"
    r"|this is a copy of the message"
    r"|(?:the )?headers? of (?:the )?(?:original|returned) message|message headers? follows?"
    r"|original message headers|copy of the original message|returned mail follows"
    r"|content of the original message|original mail)\b"
    r"|^(?:return-path|received|dkim-signature|domainkey-signature|x-original-to|delivered-to"
    r"|authentication-results|message-id):",
    re.IGNORECASE | re.MULTILINE,
)
# Header lines in a copy of the original, value with its folded continuation
# lines. Nothing follows the value's repetition, so it never backtracks.
_VALUE = r"[ \t]*+:(.*(?:\r?\n[ \t]+.*)*)"
_MESSAGE_ID_LINE = re.compile(r"^[ \t]*+message-id" + _VALUE, re.IGNORECASE | re.MULTILINE)
FROM_LINE = re.compile(
    r"^[ \t]*+(?:from|return-path|sender)" + _VALUE, re.IGNORECASE | re.MULTILINE
)
TO_LINE = re.compile(r"^[ \t]*+to" + _VALUE, re.IGNORECASE | re.MULTILINE)
_TEMPORARY_TEXT = re.compile(r"temporar|try again later|deferred", re.IGNORECASE)


def temporary(text: str) -> bool:
    code = dsn.reply_code(text)
    if code:
        return code.startswith("4")
    return bool(_TEMPORARY_TEXT.search(text))


def report_text(msg: Message) -> str:
    """The bounce's own human-readable text, cut before any copy of the original."""
    texts: list[str] = []
    for part in iter_own_parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global", "text/rfc822-headers"):
            break
        if ctype == "text/plain" or part.get_content_maintype() == "multipart":
            texts.append(part_text(part))
        elif ctype == "text/html" and not texts:
            texts.append(html_to_text(part_text(part)))
    text = "\n".join(texts)[:_MAX_REPORT_CHARS]
    marker = _ORIGINAL_MARKER.search(text)
    if marker and marker.start() > 0:
        text = text[: marker.start()]
    return text


def original_text(msg: Message) -> str:
    """Text of the original message's copy: attached part, or what follows the marker."""
    for part in iter_own_parts(msg):
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = payload_of(part)
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                inner = payload[0]
                return "\n".join(f"{k}: {v}" for k, v in inner.items())[:_MAX_ORIGINAL_CHARS]
            return part_text(part)[:_MAX_ORIGINAL_CHARS]
        if ctype == "text/rfc822-headers":
            return part_text(part)[:_MAX_ORIGINAL_CHARS]
    texts = [part_text(p) for p in iter_own_parts(msg) if p.get_content_maintype() == "text"]
    text = "\n".join(texts)
    marker = _ORIGINAL_MARKER.search(text)
    return text[marker.start() : marker.start() + _MAX_ORIGINAL_CHARS] if marker else ""


def original_message_ids(msg: Message) -> list[str]:
    """The original message's Message-ID(s), then the bounce's own In-Reply-To/References."""
    ids: list[str] = []
    for text in (original_text(msg), _all_text(msg)):
        # The second pass reads reports whose MIME structure is broken.
        for match in _MESSAGE_ID_LINE.finditer(text):
            found = parse_msgid_list(match.group(1))[:1]
            if found:
                ids.extend(found)
                break
        if ids:
            break
    for name in ("In-Reply-To", "References"):
        for value in msg.get_all(name, []) or []:
            ids.extend(reversed(parse_msgid_list(str(value))))
    return list(dict.fromkeys(ids))


def _all_text(msg: Message) -> str:
    """Every undecoded text payload in ``msg``, attached messages included (capped)."""
    chunks: list[str] = []
    room = _MAX_ALL_TEXT_CHARS
    for part in iter_all_parts(msg):
        payload = payload_of(part)
        if isinstance(payload, str):
            chunks.append(payload[:room])
            room -= len(payload) + 1
            if room <= 0:
                break
    return "\n".join(chunks)


def segment_for(address: str, text: str) -> str:
    """Lines of ``text`` from each mention of ``address`` up to the next other address."""
    lowered = address.lower()
    lines = text.split("\n")
    keep: list[str] = []
    active = False
    room = _MAX_SEGMENT_CHARS
    for number, line in enumerate(lines):
        if number % 500 == 0:
            check_budget()
        mentioned = {m.group(0).rstrip(".").lower() for m in ADDRESS.finditer(line)}
        if lowered in mentioned:
            active = True
        elif mentioned and any(not DAEMON_LOCAL.match(a.split("@")[0]) for a in mentioned):
            active = False
        if active:
            keep.append(line[:room])
            room -= len(line) + 1
            if room <= 0:
                break
    return "\n".join(keep)


def lines_about(address: str, text: str) -> str:
    """The lines that name ``address``, with the address itself removed."""
    lowered = address.lower()
    lines = [line for line in text.split("\n") if lowered in line.lower()]
    about = "\n".join(re.sub(re.escape(address), " ", line, flags=re.IGNORECASE) for line in lines)
    return about[:_MAX_SEGMENT_CHARS]
