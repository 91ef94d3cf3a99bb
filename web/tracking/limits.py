"""The tracking endpoints' rate limit: a token bucket per reader's copy, in process memory.

A bucket is keyed by (client address, open or click, sent message, recipient,
link): one reader's copy of one email (or one link in it), from one address.
"Address" is `address_key`: an IPv4 address (also when it arrives written as
IPv4-mapped IPv6, ``::ffff:203.0.113.9``), or an IPv6 address's /64 — one host
or one network is given a whole /64 and picks any address in it at will
(privacy addresses rotate within it), so keying by the exact IPv6 address would
give a single client 2**64 buckets.
Keying by address alone would shed real readers, because Gmail's image proxy
and Apple's relays fetch for millions of people from a few addresses; keyed by
copy, only something hammering the same email's pixel or link is slowed: a
security scanner's loop, a broken client, someone inflating a count. Forged
tokens never reach a bucket (the signature check comes first and records
nothing), so they cost nothing to shed.

A reader gets `BURST` hits at once and one more every `REFILL_SECONDS`; a
person opening an email now and then never comes near that. What is shed is
still answered (the image, the redirect: never a broken page for a person) and
never silently dropped: each shed hit is counted per kind, logged
(`tracking_shed kind=… count=…`) and added to the Redis hash
`sightline:tracking:shed` every `FLUSH_SECONDS`, and its answer carries
`X-Sightline-Hit: shed`.

Cost on the hot path: one dict lookup and a little arithmetic. Memory: at most
`MAX_BUCKETS` buckets per process; full (refilled) buckets are forgotten first.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass

log = logging.getLogger(__name__)

BURST = 20
REFILL_SECONDS = 10.0
MAX_BUCKETS = 100_000
FLUSH_SECONDS = 10.0
SHED_KEY = "sightline:tracking:shed"

BucketKey = tuple[str, str, int, int, int]


@functools.lru_cache(maxsize=65536)
def address_key(ip: str | None) -> str:
    """What a rate limit counts `ip` as: IPv4 as is, IPv6 by its /64 ("" for none).

    IPv4-mapped IPv6 is the IPv4 address it carries (a dual-stack listener reports
    IPv4 clients that way). Text that is no address is kept as given, cut short:
    a limit must still count it, never fail on it. Cached: the hot path pays a
    dict lookup for an address it has seen.
    """
    if not ip:
        return ""
    try:
        address = ipaddress.ip_address(ip.strip().partition("%")[0])  # a zone id names no host
    except ValueError:
        return ip[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


@dataclass
class _Bucket:
    tokens: float
    at: float


class HitLimiter:
    """Token buckets per (address, kind, sent message, recipient, link). Not thread-safe:
    one per event loop."""

    def __init__(
        self,
        burst: int = BURST,
        refill_seconds: float = REFILL_SECONDS,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        if burst < 1 or refill_seconds <= 0 or max_buckets < 1:
            raise ValueError("burst and max_buckets must be at least 1, refill_seconds above 0")
        self.burst = burst
        self.rate = 1.0 / refill_seconds
        self.max_buckets = max_buckets
        self.buckets: OrderedDict[BucketKey, _Bucket] = OrderedDict()
        self.shed: Counter[str] = Counter()

    def allow(self, key: BucketKey, now: float) -> bool:
        """Take a token from the key's bucket; False (and counted as shed) when it is empty."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= self.max_buckets:
                self._forget(now)
            self.buckets[key] = _Bucket(self.burst - 1.0, now)
            return True
        self.buckets.move_to_end(key)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self.shed[key[1]] += 1
        return False

    def _forget(self, now: float) -> None:
        """Make room for half the maximum at once (so this runs rarely): refilled buckets
        first, which lose nothing, then the least recently used."""
        full = [
            k for k, b in self.buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst
        ]
        for key in full:
            del self.buckets[key]
        while len(self.buckets) > self.max_buckets // 2:
            self.buckets.popitem(last=False)

    def take_shed(self) -> Counter[str]:
        """The shed counts since the last call (and reset them)."""
        taken, self.shed = self.shed, Counter()
        return taken
