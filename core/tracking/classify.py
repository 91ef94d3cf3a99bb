"""Labelling a tracking hit: who (or what) loaded the image or followed the link.

Rules, first match wins::

    own device cookie of the message's team ..................... self
    a recent sign-in of the team from this address ............. self
    HEAD request, or a prefetch header (Purpose, Sec-Purpose,
      X-Moz, X-Purpose) .......................................... scanner
    user agent names GoogleImageProxy ........................... google_proxy
    bare "Mozilla/5.0" user agent, or an open from Apple's
      Private Relay egress ranges ................................ apple_proxy
    address in a known mail-security gateway range (EOP, ...) ... scanner
    user agent is a crawler (crawlerdetect) or missing .......... bot
    within `scanner_seconds` of sending ......................... scanner
    anything else ............................................... person

Only `person` and `google_proxy` (Gmail fetches the image when the recipient
opens the message, then caches it: a real open without device information) are
counted as engagement. `apple_proxy` is shown as a *probable* open (Apple
prefetches every image on delivery). `self`, `scanner` and `bot` hits are kept
and labelled, never counted. Nothing is dropped.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core.tracking.ranges import KnownRanges


class HitClass(enum.StrEnum):
    PERSON = "person"
    SELF = "self"
    APPLE_PROXY = "apple_proxy"
    GOOGLE_PROXY = "google_proxy"
    SCANNER = "scanner"
    BOT = "bot"


COUNTED = frozenset({HitClass.PERSON, HitClass.GOOGLE_PROXY})
PROBABLE = frozenset({HitClass.APPLE_PROXY})
# Request headers that say the fetch is a prefetch or preview, not a person.
PREFETCH_HEADERS = {
    "purpose": ("prefetch", "preview"),
    "sec-purpose": ("prefetch", "prerender"),
    "x-moz": ("prefetch",),
    "x-purpose": ("preview", "prefetch"),
}
BARE_USER_AGENT = "Mozilla/5.0"


@dataclass(frozen=True)
class HitFacts:
    kind: str  # "open" or "click"
    method: str
    ip: str | None
    user_agent: str
    prefetch: bool
    team_id: int  # the sent message's team
    device_team_id: int | None  # from a valid device cookie, if any
    seconds_after_send: float


@dataclass(frozen=True)
class Verdict:
    hit_class: HitClass
    reason: str


def is_prefetch(headers: Iterable[tuple[str, str]]) -> bool:
    """True when a request header marks the fetch as a prefetch or preview."""
    for name, value in headers:
        wanted = PREFETCH_HEADERS.get(name.lower())
        if wanted and any(w in value.lower() for w in wanted):
            return True
    return False


def client_ip(peer: str | None, forwarded_for: str | None, trusted: tuple[str, ...]) -> str | None:
    """The client's address: the proxy's last X-Forwarded-For entry when the peer is trusted.

    A trusted proxy (Heroku's router) *appends* the address it saw, so the last
    entry is the one it vouches for; anything before it came from the client.
    """
    if forwarded_for and peer is not None and ("*" in trusted or peer in trusted):
        last = forwarded_for.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return peer


def same_network(a: str, b: str) -> bool:
    """Same IPv4 address, or the same IPv6 /64 (privacy addresses rotate within it)."""
    try:
        first, second = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    if first.version != second.version:
        return False
    if first.version == 4:
        return first == second
    return int(first) >> 64 == int(second) >> 64


def classify(
    facts: HitFacts,
    ranges: KnownRanges,
    *,
    is_crawler: Callable[[str], str | None],
    own_ips: Iterable[str] = (),
    scanner_seconds: float = 10,
) -> Verdict:
    """Label one hit. `is_crawler` returns what matched, or None for a non-crawler."""
    if facts.device_team_id is not None and facts.device_team_id == facts.team_id:
        return Verdict(HitClass.SELF, "device cookie")
    if facts.ip and any(same_network(facts.ip, own) for own in own_ips):
        return Verdict(HitClass.SELF, "address of a recent sign-in")
    if facts.method == "HEAD":
        return Verdict(HitClass.SCANNER, "HEAD request")
    if facts.prefetch:
        return Verdict(HitClass.SCANNER, "prefetch request")
    user_agent = facts.user_agent.strip()
    if "GoogleImageProxy" in user_agent:
        return Verdict(HitClass.GOOGLE_PROXY, "GoogleImageProxy")
    if user_agent == BARE_USER_AGENT:
        return Verdict(HitClass.APPLE_PROXY, "bare Mozilla/5.0 user agent")
    if facts.kind == "open" and facts.ip in ranges.apple:
        return Verdict(HitClass.APPLE_PROXY, "Apple Private Relay address")
    if facts.ip in ranges.gateways:
        return Verdict(HitClass.SCANNER, "mail security gateway address")
    if not user_agent:
        return Verdict(HitClass.BOT, "no user agent")
    matched = is_crawler(user_agent)
    if matched:
        return Verdict(HitClass.BOT, f"crawler user agent ({matched})")
    if 0 <= facts.seconds_after_send < scanner_seconds:
        return Verdict(HitClass.SCANNER, f"within {scanner_seconds:g} s of sending")
    return Verdict(HitClass.PERSON, "")
