"""RFC 3464 delivery-status fields and SMTP status codes found in text.

What this module owns: reading per-recipient DSN fields (``Final-Recipient``,
``Action``, ``Status``, ``Diagnostic-Code`` ...) out of a ``message/delivery-status``
part or out of free text that imitates one, and finding RFC 3463 enhanced status
codes (``5.1.1``) and SMTP reply codes (``550``) in error text. It does not decide
whether a message is a bounce.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.matching.budget import check_budget

__all__ = [
    "DsnRecipient",
    "best_status",
    "parse_dsn_fields",
    "parse_header_block",
    "reply_code",
]

# An enhanced status code: class 2/4/5, subject 0-7, detail up to 3 digits.
_STATUS = re.compile(r"(?<![\d.])([245])\.([0-7])\.(\d{1,3})(?![\d.]*\d)")
# A code that an SMTP reply code introduces: "550 5.1.1", "550-5.1.1", "550 #5.1.1".
_REPLY_AND_STATUS = re.compile(r"\b[245]\d\d[- ]['\"#]?([245]\.[0-7]\.\d{1,3})\b")
_REPLY = re.compile(r"(?<![\d.])([245][0-5]\d)(?:[ -]|$)")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*+)[ \t]*+:[ \t]*+(.*)$")
# Characters of one text read for fields. A status part holds ~300 characters
# per recipient; what is longer is a report's prose read as a fallback.
MAX_DSN_CHARS = 200_000


@dataclass(frozen=True)
class DsnRecipient:
    """One per-recipient block of a delivery-status report."""

    final_recipient: str
    original_recipient: str
    action: str
    status: str
    diagnostic: str
    remote_mta: str
    category: str = ""  # an MTA's own verdict field (PowerMTA's X-PowerMTA-BounceCategory)

    @property
    def address(self) -> str:
        """The recipient address, without its ``rfc822;`` type prefix."""
        return _strip_type(self.final_recipient or self.original_recipient)


def parse_dsn_fields(text: str) -> list[DsnRecipient]:
    """Per-recipient blocks found in ``text`` (a delivery-status part or free text).

    Blocks are runs of ``Field: value`` lines (continuation lines folded in); a
    block holding ``Final-Recipient`` is a recipient (``Original-Recipient``
    alone counts only when no block has ``Final-Recipient``).
    """
    every = _blocks(text[:MAX_DSN_CHARS])
    blocks = [b for b in every if "final-recipient" in b]
    if not blocks:
        blocks = [b for b in every if "original-recipient" in b]
    return [
        DsnRecipient(
            final_recipient=fields.get("final-recipient", ""),
            original_recipient=fields.get("original-recipient", ""),
            action=fields.get("action", "").strip().lower().split(" ")[0],
            status=_first_status(fields.get("status", "")),
            diagnostic=fields.get("diagnostic-code", ""),
            remote_mta=_strip_type(fields.get("remote-mta", "")),
            category=fields.get("x-powermta-bouncecategory", "").strip().lower(),
        )
        for fields in blocks
    ]


def parse_header_block(text: str) -> dict[str, str]:
    """All ``Field: value`` pairs in ``text``, keys lower-cased, first value kept."""
    merged: dict[str, str] = {}
    for block in _blocks(text[:MAX_DSN_CHARS]):
        for key, value in block.items():
            merged.setdefault(key, value)
    return merged


def best_status(*texts: str) -> str:
    """The most specific enhanced status code in the texts, or ``""``.

    Texts are tried in order. Within one text, a code introduced by a reply code
    (``550 5.1.1``) wins over a bare one, and the last such code wins: MTAs
    that relay an error append the remote server's own, more precise, code
    (``554 4.4.7 Message expired ... <421 4.4.2 Connection timed out>``).
    A generic ``X.0.0`` is used only when nothing more specific is found.
    """
    generic = ""
    for text in texts:
        if not text:
            continue
        introduced = [m.group(1) for m in _REPLY_AND_STATUS.finditer(text)]
        bare = [".".join(m.groups()) for m in _STATUS.finditer(text)]
        for candidates in (introduced, bare):
            specific = [c for c in candidates if not c.endswith(".0.0") and c[0] != "2"]
            if specific:
                return specific[-1]
            if candidates and not generic:
                generic = candidates[-1]
    return generic


def reply_code(text: str) -> str:
    """The first SMTP reply code (``550``) at a word start in ``text``, or ``""``."""
    match = _REPLY.search(text)
    return match.group(1) if match else ""


def _first_status(value: str) -> str:
    match = _STATUS.search(value)
    return ".".join(match.groups()) if match else ""


def _strip_type(value: str) -> str:
    """``rfc822; a@b`` to ``a@b``; also drops angle brackets and spaces."""
    value = value.strip()
    if ";" in value:
        value = value.split(";", 1)[1]
    return value.strip().strip("<>").strip()


def _blocks(text: str) -> list[dict[str, str]]:
    """Runs of header-like fields separated by blank lines, keys lower-cased."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last_key = ""
    for number, line in enumerate(text.replace("\r\n", "\n").split("\n")):
        if number % 2_000 == 0:
            check_budget()
        if not line.strip():
            if current:
                blocks.append(current)
            current, last_key = {}, ""
            continue
        if line[:1] in (" ", "\t") and last_key:
            current[last_key] += " " + line.strip()
            continue
        match = _FIELD.match(line)
        if match:
            last_key = match.group(1).lower()
            current.setdefault(last_key, match.group(2).strip())
        else:
            last_key = ""
    if current:
        blocks.append(current)
    return blocks
