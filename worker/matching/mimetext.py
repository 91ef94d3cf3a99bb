"""MIME plumbing for classification: parse raw bytes, decode headers and parts to text.

What this module owns: turning a raw message (any bytes) into a ``Message`` and its
parts into ``str``, whatever the charset and transfer encoding say, including
HTML-only bodies (converted to plain text with the standard library parser).
Nothing here decides what a message *is*; that lives in the classifier modules.

Messages are parsed with the ``compat32`` policy: it is the most lenient with the
broken headers real MTAs write and never raises on header access; headers are
decoded here explicitly instead.
"""

from __future__ import annotations

import codecs
import email
import email.header
import email.policy
import re
from collections.abc import Iterator
from email.message import Message
from html.parser import HTMLParser

__all__ = [
    "body_text",
    "decode_header",
    "html_to_text",
    "iter_own_parts",
    "parse_bytes",
    "part_text",
]

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


def parse_bytes(raw: bytes) -> Message:
    """Parse raw message bytes leniently (compat32); defects are recorded, not raised."""
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def decode_header(value: object) -> str:
    """Header value as readable text: RFC 2047 words decoded, folding removed."""
    if value is None:
        return ""
    text = str(value).encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    text = re.sub(r"\r?\n[ \t]*", " ", text)
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


def part_text(part: Message) -> str:
    """Decoded text of a non-multipart part (transfer encoding and charset undone)."""
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return _decode_bytes(payload, part.get_content_charset())
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        # message/delivery-status and friends parse into header blocks.
        return "\n\n".join(m.as_string() if isinstance(m, Message) else str(m) for m in raw)
    return ""


def iter_own_parts(msg: Message) -> Iterator[Message]:
    """Leaf parts of ``msg`` itself; ``message/*`` parts are leaves, never entered."""
    if msg.get_content_maintype() == "multipart" and msg.is_multipart():
        for sub in msg.get_payload():
            if isinstance(sub, Message):
                yield from iter_own_parts(sub)
        return
    yield msg


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


def html_to_text(markup: str) -> str:
    """Readable text of an HTML fragment: blocks become lines, scripts and styles go."""
    parser = _TextExtractor()
    try:
        parser.feed(markup)
        parser.close()
    except AssertionError:
        # html.parser asserts on some malformed declarations; keep what was read.
        pass
    text = "".join(parser.chunks)
    text = re.sub(r"[ \t\u00a0]+", " ", text)
    text = re.sub(r" *\n *", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# Gmail, Outlook (web, Windows, Mac), Yahoo, Proton Mail, Thunderbird, Zoho.
_QUOTE_CONTAINER = re.compile(
    r"gmail_quote|divRplyFwdMsg|appendonsend|mail-editor-reference-message-container"
    r"|yahoo_quoted|protonmail_quote|moz-cite-prefix|zmail_extra"
)


class _TextExtractor(HTMLParser):
    _BLOCKS = frozenset(
        "p div br li tr h1 h2 h3 h4 h5 h6 table blockquote pre hr section article".split()  # noqa: SIM905
    )
    _SKIP = frozenset(["script", "style", "head", "title"])

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip_depth = 0
        self._quote_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip_depth += 1
        elif tag == "blockquote":
            self._quote_depth += 1
            self.chunks.append("\n")
        elif tag in self._BLOCKS:
            self.chunks.append("\n")
        # Webmail and desktop clients wrap quoted history in these: mark it as a quote.
        classes = " ".join(v or "" for k, v in attrs if k in ("class", "id"))
        if tag == "div" and _QUOTE_CONTAINER.search(classes):
            self.chunks.append("\n>>QUOTE-START<<\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag == "blockquote":
            self._quote_depth = max(0, self._quote_depth - 1)
            self.chunks.append("\n")
        elif tag in self._BLOCKS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._quote_depth:
            lines = data.split("\n")
            data = "\n".join("> " + line if line.strip() else line for line in lines)
        self.chunks.append(data)


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
        except LookupError:
            name = ""
    if name and name not in ("us-ascii", "ascii"):
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")
