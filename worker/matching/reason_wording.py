"""The wording a bounce's reason is read from, as phrases that can be counted and left out.

What this module owns: ``Wording``, the ordered reason → phrases table that
``reasons.py`` reads error texts with (each reason's phrases compiled into one
pattern; the first reason that matches wins), and the means to measure how much
that table depends on one mail server's own words:

- ``Wording.deciding_phrase`` names the phrase that decided a text;
- ``Wording.without`` is the same table with some phrases left out;
- ``using`` makes a table the one ``reasons.reason_from_text`` reads with, for
  the current context only (``bench/classify_accuracy.py`` scores each family
  of mail servers with the phrases only that family ever needed left out: the
  leave-one-family-out score). Production never calls it.

A phrase is one top-level alternative of a reason's pattern source, so the
table is written as readable regex sources and split here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Wording", "active", "split_alternatives", "using"]

Rules = tuple[tuple[str, str], ...]


def split_alternatives(source: str) -> tuple[str, ...]:
    """The top-level ``|`` alternatives of a regex source (not inside groups or sets)."""
    parts: list[str] = []
    depth, start, index, in_set = 0, 0, 0, False
    while index < len(source):
        char = source[index]
        if char == "\\":
            index += 2
            continue
        if in_set:
            in_set = char != "]"
        elif char == "[":
            in_set = True
            if source[index + 1 : index + 2] == "]":
                index += 1  # "[]...]": a literal ] first in the set
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(source[start:index])
            start = index + 1
        index += 1
    parts.append(source[start:])
    return tuple(parts)


class Wording:
    """An ordered table: reason → phrases (regex sources), read case-insensitively.

    A reason may appear more than once: its general wording comes last, after
    every more specific phrase of the other reasons had its turn.
    """

    def __init__(self, rules: Rules, left_out: frozenset[str] = frozenset()) -> None:
        self.rules = rules
        self.left_out = left_out
        self.phrases: tuple[tuple[str, tuple[str, ...]], ...] = tuple(
            (reason, tuple(p for p in split_alternatives(source) if p not in left_out))
            for reason, source in rules
        )
        kept = [(reason, phrases) for reason, phrases in self.phrases if phrases]
        self.compiled: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
            (reason, re.compile("|".join(phrases), re.IGNORECASE)) for reason, phrases in kept
        )
        self._kept_phrases = tuple(phrases for _, phrases in kept)

    def without(self, phrases: frozenset[str]) -> Wording:
        """This table with ``phrases`` left out (a reason left with none is dropped)."""
        return Wording(self.rules, self.left_out | phrases)

    def reason(self, flat: str) -> str | None:
        """The first reason whose wording appears in ``flat`` (whitespace folded), or None."""
        for reason, pattern in self.compiled:
            if pattern.search(flat):
                return reason
        return None

    def deciding_phrase(self, flat: str) -> str | None:
        """The phrase that decides ``flat``'s reason (for measurement, not the hot path)."""
        for (_, pattern), phrases in zip(self.compiled, self._kept_phrases, strict=True):
            if pattern.search(flat):
                return next(p for p in phrases if re.search(p, flat, re.IGNORECASE))
        return None


_ACTIVE: ContextVar[Wording | None] = ContextVar("reason_wording", default=None)


def active(default: Wording) -> Wording:
    """The table to read with: ``default`` unless ``using`` set another here."""
    return _ACTIVE.get() or default


@contextmanager
def using(wording: Wording) -> Iterator[Wording]:
    """Read reasons with ``wording`` inside the block (this context only)."""
    token = _ACTIVE.set(wording)
    try:
        yield wording
    finally:
        _ACTIVE.reset(token)
