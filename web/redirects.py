"""The one check for a redirect target that came from a request: a path on this site, or nothing.

Every redirect whose target a request chose (sign-in's ``next``, the connect
flow's ``return_to``) passes `safe_redirect_path`; targets the app builds itself
(`url_for`) need no check. What passes is a *path-absolute* reference a browser
cannot read as another host:

- printable ASCII only: no whitespace, no control characters, nothing a browser
  strips or folds before parsing (tab, CR, LF, NUL, U+2028/2029, fullwidth
  solidus U+FF0F); a caller with a non-ASCII path percent-encodes it first (`path_of`);
- one leading ``/``, then anything but ``/`` or ``\\``: ``//evil``, ``/\\evil``
  and ``\\/evil`` are scheme-relative to browsers (WHATWG URL treats ``\\`` as
  ``/`` in http(s) URLs);
- no ``\\`` anywhere, no ``.``/``..`` segment and no empty segment in the path
  (``/.//evil`` resolves to ``//evil``), no ``@`` in the path;
- the same again after percent-decoding, repeatedly, and after NFKC folding of
  the decoded text (``/%2F%2Fevil``, ``/%5Cevil``, ``/%09/evil``, ``/%EF%BC%8F…``),
  so a second decoder further down the line finds nothing either;
- `urllib.parse.urlsplit` sees no scheme and no host.

Anything else is replaced by the caller's default, and logged (never the
target itself, which is attacker-chosen text: only its length).

Werkzeug's own redirects (``/api/v1`` → ``/api/v1/``, merged slashes) are made
absolute from the request's Host header, which the client chooses:
`keep_redirects_on_site`, an after-request hook on every answer, turns an
absolute Location naming the request's own host back into a path, so no Host
header can make an answer point elsewhere.

Must never: return a value that is not a path on this site.
"""

from __future__ import annotations

import logging
import unicodedata
from urllib.parse import quote, quote_from_bytes, unquote, urlsplit

from flask import request
from werkzeug.wrappers import Response as BaseResponse

log = logging.getLogger(__name__)

MAX_TARGET = 2048
# Printable ASCII except space: what a path and query may hold unescaped here.
_PRINTABLE = frozenset(chr(c) for c in range(0x21, 0x7F))
# RFC 3986 path and query characters (and "%"), left as they are by `path_of`.
_URL_SAFE = "/?&=%:;,+$!*'()~-._[]"
# Decoding rounds: "%25252F" needs three; a target needing more is refused.
_DECODE_ROUNDS = 4


def _bad_char(ch: str) -> bool:
    """Controls, line and paragraph separators, and unpaired surrogates."""
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")


def _safe_shape(text: str, *, decoded: bool) -> bool:
    """The rules every form of the target must pass (raw, decoded, folded)."""
    if not text.startswith("/") or text[1:2] in ("/", "\\") or "\\" in text:
        return False
    if any(_bad_char(ch) for ch in text):
        return False
    if not decoded and not all(ch in _PRINTABLE for ch in text):
        return False
    path = text.split("?", 1)[0].split("#", 1)[0]
    segments = path.split("/")[1:]
    # "" only as the last segment (a trailing slash); never "." or "..".
    if any(s in (".", "..") for s in segments) or "" in segments[:-1] or "@" in path:
        return False
    parts = urlsplit(text)
    return not parts.scheme and not parts.netloc


def is_safe_redirect_path(target: object) -> bool:
    """True if `target` may be redirected to: a path on this site, by the rules above."""
    if not isinstance(target, str) or not target or len(target) > MAX_TARGET:
        return False
    if not _safe_shape(target, decoded=False):
        return False
    seen = target
    for _ in range(_DECODE_ROUNDS):
        try:
            decoded = unquote(seen, errors="strict") if "%" in seen else seen
        except UnicodeDecodeError:
            return False  # bytes that are no text: not a path anyone wrote
        folded = unicodedata.normalize("NFKC", decoded)
        if not _safe_shape(decoded, decoded=True) or not _safe_shape(folded, decoded=True):
            return False
        if decoded == seen:
            return True
        seen = decoded
    return False  # still decoding after all the rounds: nobody writes a path like that


def safe_redirect_path(target: object, default: str = "/") -> str:
    """`target` if it is a safe path on this site (`is_safe_redirect_path`), else `default`."""
    if is_safe_redirect_path(target):
        assert isinstance(target, str)
        return target
    if target:
        log.warning("redirect_refused length=%s", len(str(target)))
    return default


def path_of(path: str, query: bytes = b"") -> str:
    """A request's own path and query as a redirect target: non-ASCII percent-encoded.

    Werkzeug hands paths over decoded; encoding them back keeps a page with an
    accented path returnable after sign-in instead of failing the ASCII rule.
    """
    text = quote(path, safe=_URL_SAFE)
    return f"{text}?{quote_from_bytes(query, safe=_URL_SAFE + '@')}" if query else text


def keep_redirects_on_site(response: BaseResponse) -> BaseResponse:
    """An absolute Location on the request's own host becomes a path (see the module doc).

    Locations on other hosts (a provider's consent page) are left as they are:
    the app builds those itself, never from a request.
    """
    location = response.headers.get("Location")
    if not location or location.startswith("/"):
        return response
    parts = urlsplit(location)
    if parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower():
        path = parts.path or "/"
        response.headers["Location"] = path + (f"?{parts.query}" if parts.query else "")
    return response
