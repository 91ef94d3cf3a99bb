"""Filling a step's placeholders, and the plain-text part of an HTML body.

The placeholders and the missing-value rule live in `core.templates`
(``{{first_name}}``, ``{{company|fallback}}``, …). Here a missing value or an
unknown placeholder renders as empty text, never as the raw ``{{…}}`` a prospect
would see; `worker.sequences.claiming` checks for them before it claims a step
(`core.templates.render_all`) and holds the enrolment instead of sending.
Values are HTML-escaped in HTML bodies.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Protocol

from core.templates import render, values_for


class _Person(Protocol):
    email: str
    name: str | None
    company: str | None


class _Sender(Protocol):
    email: str


def placeholder_values(
    prospect: _Person | None,
    mailbox: _Sender | None,
    sender_name: str | None = None,
    sender_signature: str | None = None,
) -> dict[str, str]:
    """The values for a prospect's email; a stored prospect's team gives its unsubscribe link."""
    return values_for(
        prospect,
        sender_email=mailbox.email if mailbox else None,
        sender_name=sender_name,
        sender_signature=sender_signature,
        team_id=getattr(prospect, "team_id", None),
    )


def render_template(
    template: str,
    prospect: _Person | None,
    mailbox: _Sender | None,
    *,
    html: bool = False,
    sender_name: str | None = None,
    sender_signature: str | None = None,
) -> str:
    values = placeholder_values(prospect, mailbox, sender_name, sender_signature)
    return render(template, values, html_mode=html).text


class _TextExtractor(HTMLParser):
    _BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "blockquote"})
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCKS:
            self.parts.append("\n")
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in ("p", "div", "li", "tr", "h1", "h2", "h3", "h4"):
            self.parts.append("\n")
        if tag == "a" and self._href:
            self.parts.append(f" ({self._href})")
            self._href = None

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(body: str) -> str:
    """A readable plain-text alternative for an HTML body."""
    parser = _TextExtractor()
    parser.feed(body)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
