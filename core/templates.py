"""What a salesperson writes into an email: placeholders, their values, the HTML allowed.

Owns the placeholder syntax and the one rule about missing values, for every
email Sightline sends (sequence steps, one-off emails, saved templates):

    {{first_name}}            the value, or *missing*
    {{first_name|there}}      the value, or the fallback text "there"
    {{company|}}              the value, or nothing (an explicit empty fallback)

A placeholder whose value is missing and that has no fallback is **never sent**:
`render` reports it in `Rendered.missing`, and the sender refuses the send
(`worker.sequences.claiming.claim_due_step` pauses that enrolment with a reason
naming the placeholder; the compose form refuses with an error on the field).
In a preview it is shown, marked, so the writer sees it before anything goes out.
Anything else between ``{{`` and ``}}`` (a typo, an unknown name, a name the rich
text editor split with tags) is `unknown`: refused when a template is saved, and
treated like a missing value if it reaches a send.

`sanitize_html` is the allow-list for bodies written in the web app (nh3,
the Rust ammonia sanitizer): formatting, links, lists, images and tables; no
scripts, styles, event handlers, forms or frames.

Must never: return a raw ``{{…}}`` in `Rendered.text` outside preview mode, or
insert a value into HTML without escaping it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import nh3

from config import get_settings
from core.tracking.tokens import unsubscribe_url

# name → what the web app tells the writer it is
PLACEHOLDERS: dict[str, str] = {
    "first_name": "the prospect's first name",
    "last_name": "the prospect's last name",
    "name": "the prospect's full name",
    "email": "the prospect's email address",
    "company": "the prospect's company",
    "sender_name": "your name (the mailbox owner's)",
    "sender_first_name": "your first name",
    "sender_email": "the address the email is sent from",
    "unsubscribe_link": "the link that takes the prospect off your list (no sign-in, one click)",
    "signature": "your email signature (set on your Account page)",
}

# The sender's own values (the mailbox owner's): a missing one is asked of the
# sender, on their Account page, never of the prospect.
SENDER_PLACEHOLDERS = frozenset({"sender_name", "sender_first_name", "sender_email", "signature"})
# Values that are HTML (kept by the allow-list when saved): inserted as they are in an
# HTML body, as their text elsewhere (a subject, the plain-text part).
HTML_VALUES = frozenset({"signature"})
SIGNATURE_LIMIT = 5000

# Anything between double braces, on one line: a placeholder or an attempt at one.
_BRACES = re.compile(r"\{\{([^{}\n]*)\}\}")
_INNER = re.compile(r"^\s*([A-Za-z_]+)\s*(?:\|(.*))?$", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")

ALLOWED_TAGS = frozenset(
    {
        "a", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "hr",
        "i", "img", "li", "ol", "p", "pre", "s", "span", "strong", "sub", "sup", "table",
        "tbody", "td", "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "a": {"href", "title", "data-sightline-untracked"},
    "img": {"src", "alt", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}
ALLOWED_SCHEMES = frozenset({"http", "https", "mailto", "tel"})


class Person(Protocol):
    email: str
    name: str | None
    company: str | None


@dataclass(frozen=True)
class Rendered:
    text: str
    missing: tuple[str, ...] = ()  # known placeholders with no value and no fallback
    unknown: tuple[str, ...] = ()  # `{{…}}` that is not a placeholder we know, as written

    @property
    def blocked(self) -> tuple[str, ...]:
        """What stops this from being sent: missing values first, then unknown names."""
        return self.missing + self.unknown


def _split_name(name: str | None) -> tuple[str, str, str]:
    full = " ".join((name or "").split())
    first, _, last = full.partition(" ")
    return full, first, last


def values_for(
    prospect: Person | None,
    *,
    sender_email: str | None,
    sender_name: str | None = None,
    sender_signature: str | None = None,
    team_id: int | None = None,
) -> dict[str, str]:
    """Every placeholder's value; an empty string is a missing value.

    ``{{unsubscribe_link}}`` needs the team (the link names the team and the
    address): without `team_id` it is missing. `sender_signature` is HTML
    (`clean_signature`'s); a signature with no text in it is missing.
    """
    full, first, last = _split_name(prospect.name if prospect else None)
    link = ""
    if prospect is not None and prospect.email and team_id is not None:
        link = unsubscribe_url(get_settings().public_base_url, team_id, prospect.email)
    sender_full, sender_first, _ = _split_name(sender_name)
    return {
        "first_name": first,
        "last_name": last,
        "name": full,
        "email": prospect.email if prospect else "",
        "company": " ".join((prospect.company or "").split()) if prospect else "",
        "sender_name": sender_full,
        "sender_first_name": sender_first,
        "sender_email": sender_email or "",
        "unsubscribe_link": link,
        "signature": sender_signature
        if sender_signature and has_signature(sender_signature)
        else "",
    }


def _parse(inner: str, *, html_mode: bool) -> tuple[str, str | None] | None:
    """(name, fallback or None) for a known placeholder, None for anything else."""
    if html_mode:
        inner = html.unescape(_TAG.sub("", inner))
    match = _INNER.match(inner)
    if match is None or match.group(1).lower() not in PLACEHOLDERS:
        return None
    fallback = match.group(2)
    return match.group(1).lower(), (fallback.strip() if fallback is not None else None)


def render(
    template: str, values: dict[str, str], *, html_mode: bool = False, preview: bool = False
) -> Rendered:
    """Fill the placeholders of `template`.

    Outside `preview`, a missing value or an unknown placeholder becomes empty
    text (and is reported: the caller must not send it). In `preview` it is shown:
    ``[company missing]``, wrapped in ``<mark>`` in HTML.
    """
    missing: list[str] = []
    unknown: list[str] = []

    def shown(label: str) -> str:
        if not html_mode:
            return f"[{label}]"
        return f'<mark class="missing-value">[{html.escape(label)}]</mark>'

    def substitute(match: re.Match[str]) -> str:
        parsed = _parse(match.group(1), html_mode=html_mode)
        if parsed is None:
            written = match.group(0)
            if html_mode:
                written = html.unescape(_TAG.sub("", written))
            if written not in unknown:
                unknown.append(written)
            return shown(f"unknown placeholder {written}") if preview else ""
        name, fallback = parsed
        value = values.get(name, "")
        if not value:
            if fallback is not None:
                value = fallback
            else:
                if name not in missing:
                    missing.append(name)
                return shown(f"{name} missing") if preview else ""
        if name in HTML_VALUES and value is not fallback:
            # Re-checked by the allow-list here too: a value never carries markup it lost.
            return sanitize_html(value) if html_mode else signature_text(value)
        return html.escape(value, quote=True) if html_mode else value

    text = _BRACES.sub(substitute, template)
    return Rendered(text, tuple(missing), tuple(unknown))


def render_all(
    parts: Iterable[tuple[str, bool]], values: dict[str, str], *, preview: bool = False
) -> tuple[list[str], tuple[str, ...]]:
    """Render (template, is_html) pairs; return the texts and everything that blocks a send."""
    texts: list[str] = []
    blocked: list[str] = []
    for template, is_html in parts:
        rendered = render(template, values, html_mode=is_html, preview=preview)
        texts.append(rendered.text)
        blocked.extend(b for b in rendered.blocked if b not in blocked)
    return texts, tuple(blocked)


def unknown_placeholders(template: str, *, html_mode: bool = False) -> list[str]:
    """Every `{{…}}` in `template` that is not a placeholder we know, as written."""
    return list(render(template, {}, html_mode=html_mode).unknown)


def used_placeholders(template: str, *, html_mode: bool = False) -> list[tuple[str, bool]]:
    """(name, has a fallback) of each known placeholder in `template`, in order."""
    found: list[tuple[str, bool]] = []
    for match in _BRACES.finditer(template):
        parsed = _parse(match.group(1), html_mode=html_mode)
        if parsed is not None and (parsed[0], parsed[1] is not None) not in found:
            found.append((parsed[0], parsed[1] is not None))
    return found


def sanitize_html(body: str) -> str:
    """The body with only the allowed tags, attributes and link schemes left."""
    cleaned: str = nh3.clean(
        body,
        tags=set(ALLOWED_TAGS),
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=set(ALLOWED_SCHEMES),
        link_rel=None,
        strip_comments=True,
    )
    return cleaned.strip()


def clean_signature(text: str) -> str:
    """A signature as typed (plain text, or HTML pasted in) as the HTML that is kept.

    Plain text becomes paragraphs with its line breaks; HTML keeps only what the
    allow-list keeps. An empty result means "no signature".
    """
    text = text.replace("\r\n", "\n").strip()
    if _MARKUP.search(text) and not _BLOCKS.search(text):
        text = text.replace("\n", "<br>\n")  # pasted inline HTML: its lines are still lines
    cleaned = sanitize_html(plain_to_html(text))
    return cleaned if has_signature(cleaned) else ""


def has_signature(value: str) -> bool:
    """Whether a signature shows anything: some text, or an image (a logo)."""
    return bool(signature_text(value)) or "<img" in value


_BLOCKS = re.compile(r"<(?:br|p|div|li|tr|table|h[1-4])\b", re.IGNORECASE)
_LINE_BREAKS = re.compile(r"<br\s*/?>|</(?:p|div|li|tr|h[1-4])>", re.IGNORECASE)


def signature_text(value: str) -> str:
    """The text of an HTML value (line breaks kept), for a subject or the plain part."""
    text = nh3.clean(_LINE_BREAKS.sub("\n", value), tags=set(), strip_comments=True)
    lines = [" ".join(line.split()) for line in html.unescape(text).splitlines()]
    return "\n".join(line for line in lines if line)


_MARKUP = re.compile(r"</?[a-z][a-z0-9]*(?:\s[^<>]*)?/?>|&(?:[a-z]+|#\d+);", re.IGNORECASE)


def plain_to_html(text: str) -> str:
    """Plain text (a textarea without the editor) as paragraphs; markup is left alone."""
    if _MARKUP.search(text):
        return text
    paragraphs = re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip())
    return "".join(
        "<p>" + html.escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs if p.strip()
    )
