"""Protections every route of the Flask app gets, whoever wrote the route.

- `BoundedIntConverter` replaces Werkzeug's `int` URL converter: ids in paths
  are at most 2**31 - 1 (PostgreSQL `integer`), so `/emails/99999999999`
  answers 404 like any other id that does not exist, not a 500 from the
  database ("integer out of range" on PostgreSQL, OverflowError on SQLite).
  A route over a 64-bit id says so: `<int(max=9223372036854775807):id>`.
- `default_headers` gives every answer `X-Content-Type-Options: nosniff` and
  every HTML page the app's security headers (CSP with `frame-ancestors
  'none'`, no framing, same-origin referrers) unless its blueprint set its own
  (the document viewer's stricter policy, the app's pages); a page whose own
  policy lets some origins frame it (the Outlook add-in's panes) gets no
  `X-Frame-Options`.

Must never: loosen a header a blueprint set, or let a bad id reach the database.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map
from werkzeug.wrappers import Response as BaseResponse

from web.redirects import keep_redirects_on_site

MAX_ID = 2**31 - 1

HTML_HEADERS = {
    # The same policy as the app's pages (web.app.common), for the pages outside it:
    # sign-in, the Live Feed, the content library, mailboxes.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: https: http:; connect-src 'self'; frame-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _up_to(limit: int) -> str:
    """A regular expression for the decimal numbers 0 … `limit` (leading zeros allowed)."""
    digits = str(limit)
    choices = [rf"\d{{1,{len(digits) - 1}}}"] if len(digits) > 1 else []
    for at, digit in enumerate(digits):
        if digit != "0":
            rest = len(digits) - at - 1
            below = f"[0-{int(digit) - 1}]"
            choices.append(digits[:at] + below + (rf"\d{{{rest}}}" if rest else ""))
    choices.append(digits)
    return "0*(?:" + "|".join(choices) + ")"


class BoundedIntConverter(IntegerConverter):
    """Werkzeug's `int`, at most `MAX_ID` unless the rule gives its own `max`.

    The bound is in the regular expression, not only in `to_python`: Werkzeug
    answers 405 instead of 404 when a path has rules for other methods whose
    pattern matched but whose converter refused the value.
    """

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("max") is None:
            kwargs["max"] = MAX_ID
            self.regex = _up_to(MAX_ID)
        super().__init__(url_map, *args, **kwargs)


def default_headers(response: BaseResponse) -> BaseResponse:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        # A page whose own policy names its frame-ancestors (the Outlook add-in's panes,
        # framed by Outlook on the web) decides its framing: X-Frame-Options has no way
        # to name an origin, and DENY would override it in older browsers.
        policy = response.headers.get("Content-Security-Policy", "")
        own_framing = "frame-ancestors" in policy and "frame-ancestors 'none'" not in policy
        for name, value in HTML_HEADERS.items():
            if not (name == "X-Frame-Options" and own_framing):
                response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    """Call before any blueprint is registered: the converter applies to rules as they are added."""
    app.url_map.converters["int"] = BoundedIntConverter
    app.after_request(default_headers)
    app.after_request(keep_redirects_on_site)
