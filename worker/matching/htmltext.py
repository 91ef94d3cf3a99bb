"""HTML to readable text in linear time: what an HTML-only reply says.

What this module owns: turning an HTML body into the text a person reads, with
block elements as line breaks, ``<script>``/``<style>``/``<head>``/``<title>``
dropped, ``<blockquote>`` lines prefixed with ``> `` and the quote containers of
webmail and desktop clients marked with ``replytext.QUOTE_MARKER`` (the history
starts there).

Why not ``html.parser``: on Python 3.11 its tolerant start-tag scan restarts from
every ``<`` that does not close: 20 KB of ``<a `` took 7 s here, 80 KB would take
about two minutes (CPython gh-135462, fixed only in later patch releases). This tokenizer moves
forward only: every search for the end of a tag, comment or raw-text element
starts where the last one stopped, and the position of the next ``>`` is
remembered, so a run of unclosed ``<`` costs one scan, not one per ``<``.

Tolerance, as browsers read it: ``<`` not followed by a letter, ``/``, ``!`` or
``?`` is text; a tag that never closes makes the rest text; an unclosed comment
or ``<script>`` hides the rest. Attribute values holding ``>`` end the tag early
(rare in mail; the rest of that tag then reads as text).
"""

from __future__ import annotations

import html
import re

from worker.matching.budget import check_budget
from worker.matching.replytext import QUOTE_MARKER

__all__ = ["html_to_text"]

_BLOCKS = frozenset(
    "p div br li tr h1 h2 h3 h4 h5 h6 table blockquote pre hr section article".split()  # noqa: SIM905
)
_SKIP = frozenset(["script", "style", "head", "title"])
# Their content is raw text up to the matching end tag (HTML's raw-text elements).
_RAW_TEXT = frozenset(["script", "style"])
# Gmail, Outlook (web, Windows, Mac), Yahoo, Proton Mail, Thunderbird, Zoho.
_QUOTE_CONTAINER = re.compile(
    r"gmail_quote|divRplyFwdMsg|appendonsend|mail-editor-reference-message-container"
    r"|yahoo_quoted|protonmail_quote|moz-cite-prefix|zmail_extra"
)
# One attribute that may name a quote container. Starts only at "class"/"id"
# after a space: each start costs at most the attribute's own length.
_CLASS_OR_ID = re.compile(r"""\s(?:class|id)[ \t\r\n]*=[ \t\r\n]*("[^"]*"|'[^']*'|[^\s>]+)""", re.I)
_TAG_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9]*")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANK_RUN = re.compile(r"\n{3,}")
# How many characters between two budget checks.
_CHECK_EVERY = 65_536


def html_to_text(markup: str) -> str:
    """Readable text of an HTML fragment: blocks become lines, scripts and styles go."""
    extractor = _Extractor(markup)
    extractor.run()
    text = _SPACES.sub(" ", "".join(extractor.chunks))
    text = "\n".join(line.strip(" ") for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", text).strip()


class _Extractor:
    """One forward pass over the markup; ``chunks`` collects the text."""

    def __init__(self, markup: str) -> None:
        self.markup = markup
        self.chunks: list[str] = []
        self.skip_depth = 0
        self.quote_depth = 0
        self.next_gt = -1  # position of the first ">" at or after the last search start

    def run(self) -> None:
        markup, end = self.markup, len(self.markup)
        pos, checked = 0, 0
        while pos < end:
            if pos - checked >= _CHECK_EVERY:
                check_budget()
                checked = pos
            lt = markup.find("<", pos)
            if lt < 0:
                self.data(markup[pos:])
                return
            if lt > pos:
                self.data(markup[pos:lt])
            pos = self.markup_at(lt)

    def markup_at(self, lt: int) -> int:
        """Read the construct opening at ``lt``; return where reading goes on."""
        markup = self.markup
        following = markup[lt + 1 : lt + 2]
        if markup.startswith("<!--", lt):
            close = markup.find("-->", lt + 4)
            return len(markup) if close < 0 else close + 3
        if not (following.isascii() and (following.isalpha() or following in "/!?")):
            self.data("<")
            return lt + 1
        gt = self.gt_after(lt + 1)
        if gt < 0:
            # No tag can close any more: everything left is text.
            self.data(markup[lt:])
            return len(markup)
        if following in "!?":
            return gt + 1  # declaration, processing instruction, CDATA: no text
        inside = markup[lt + 1 : gt]
        if following == "/":
            name = _TAG_NAME.match(inside, 1)
            if name:
                self.end_tag(name.group(0).lower())
            return gt + 1
        name = _TAG_NAME.match(inside)
        tag = name.group(0).lower() if name else ""
        self.start_tag(tag, inside)
        if inside.endswith("/"):
            self.end_tag(tag)
            return gt + 1
        if tag in _RAW_TEXT:
            return self.skip_raw_text(tag, gt + 1)
        return gt + 1

    def gt_after(self, start: int) -> int:
        """Position of the first ``>`` at or after ``start`` (-1: none), remembered."""
        if self.next_gt == -2:
            return -1
        if self.next_gt < start:
            found = self.markup.find(">", start)
            self.next_gt = found if found >= 0 else -2
            return found
        return self.next_gt

    def skip_raw_text(self, tag: str, start: int) -> int:
        """Skip a ``<script>``/``<style>`` body up to its end tag (or the end)."""
        markup, pos = self.markup, start
        while True:
            close = markup.find("</", pos)
            if close < 0:
                return len(markup)
            if markup[close + 2 : close + 2 + len(tag)].lower() == tag:
                self.skip_depth = max(0, self.skip_depth - 1)
                gt = self.gt_after(close + 2)
                return len(markup) if gt < 0 else gt + 1
            pos = close + 2

    def start_tag(self, tag: str, inside: str) -> None:
        if tag in _SKIP:
            self.skip_depth += 1
        elif tag == "blockquote":
            self.quote_depth += 1
            self.chunks.append("\n")
        elif tag in _BLOCKS:
            self.chunks.append("\n")
        # Webmail and desktop clients wrap quoted history in these: mark it as a quote.
        if tag == "div" and any(
            _QUOTE_CONTAINER.search(m.group(1)) for m in _CLASS_OR_ID.finditer(inside)
        ):
            self.chunks.append(f"\n{QUOTE_MARKER}\n")

    def end_tag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag == "blockquote":
            self.quote_depth = max(0, self.quote_depth - 1)
            self.chunks.append("\n")
        elif tag in _BLOCKS:
            self.chunks.append("\n")

    def data(self, raw: str) -> None:
        if self.skip_depth:
            return
        text = html.unescape(raw)
        if self.quote_depth:
            text = "\n".join("> " + line if line.strip() else line for line in text.split("\n"))
        self.chunks.append(text)
