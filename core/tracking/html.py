"""Applying tracking to an HTML body at send time: the pixel and signed click links.

`apply_tracking` returns the body with every ``http(s)`` link's ``href`` replaced
by ``<base>/c/<token>`` (the destination signed into the token) and a 1x1 image
``<base>/o/<token>.gif`` placed just before ``</body>`` (or at the end). The rest
of the markup is left byte for byte as it was: tags are found with the standard
HTML parser and only the ``href`` attribute of each ``<a>`` is rewritten.

Left alone: ``mailto:``, ``tel:``, in-page ``#anchors``, links without a scheme,
links to our own base URLs (`own_urls`: the operator's and the team's tracking
host; the click endpoint, the document viewer and the unsubscribe page record or
act on their own), and any ``<a>`` carrying ``data-sightline-untracked``.
A plain-text-only email cannot carry a pixel: it is untrackable for opens (see
the README).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from core.tracking.tokens import MAX_URL_LENGTH, click_token, open_token

_HREF = re.compile(r"""(\shref\s*=\s*)("[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@dataclass(frozen=True)
class TrackedBody:
    html: str
    pixel_url: str
    links: list[str]  # destinations, in body order (the token's link index)


class _AnchorFinder(HTMLParser):
    """Offsets and text of every <a> start tag, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[int, int, str, str | None, bool]] = []
        self._line_starts: list[int] = [0]

    def feed_text(self, text: str) -> None:
        self._line_starts = [0]
        for match in re.finditer("\n", text):
            self._line_starts.append(match.end())
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        raw = self.get_starttag_text() or ""
        line, column = self.getpos()
        start = self._line_starts[line - 1] + column
        values = dict(attrs)
        self.anchors.append(
            (start, start + len(raw), raw, values.get("href"), "data-sightline-untracked" in values)
        )


def _replace_href(tag: str, url: str) -> str:
    def replacement(match: re.Match[str]) -> str:
        return f'{match.group(1)}"{url}"'

    return _HREF.sub(replacement, tag, count=1)


def _trackable(href: str | None, own_urls: tuple[str, ...]) -> bool:
    if not href:
        return False
    value = href.strip()
    if len(value) > MAX_URL_LENGTH:
        return False
    if not value.lower().startswith(("http://", "https://")):
        return False
    return not any(value == own or value.startswith(f"{own}/") for own in own_urls)


def apply_tracking(
    body_html: str,
    *,
    base_url: str,
    sent_message_id: int,
    team_id: int,
    recipient: int,
    issued_at: int,
    own_urls: tuple[str, ...] = (),
) -> TrackedBody:
    """The body with its links rewritten and the pixel inserted, both on `base_url`.

    Links to `base_url` or to any of `own_urls` are left as they are.
    """
    own = (base_url, *own_urls)
    finder = _AnchorFinder()
    finder.feed_text(body_html)
    pieces: list[str] = []
    links: list[str] = []
    cursor = 0
    for start, end, raw, href, untracked in finder.anchors:
        if untracked or not _trackable(href, own) or body_html[start:end] != raw:
            continue
        assert href is not None
        destination = href.strip()
        token = click_token(sent_message_id, team_id, recipient, issued_at, len(links), destination)
        links.append(destination)
        tracked = html.escape(f"{base_url}/c/{token}", quote=True)
        pieces.append(body_html[cursor:start])
        pieces.append(_replace_href(raw, tracked))
        cursor = end
    pieces.append(body_html[cursor:])
    rewritten = "".join(pieces)
    pixel_url = f"{base_url}/o/{open_token(sent_message_id, team_id, recipient, issued_at)}.gif"
    pixel = (
        f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;">'
    )
    ends = list(_BODY_END.finditer(rewritten))
    if ends:
        at = ends[-1].start()
        rewritten = rewritten[:at] + pixel + rewritten[at:]
    else:
        rewritten += pixel
    return TrackedBody(html=rewritten, pixel_url=pixel_url, links=links)
