"""Failed sign-ins counted in Redis, so a password guesser is stopped and a typo is not.

Three fixed windows of `SIGHTLINE_SIGNIN_WINDOW_SECONDS` (default 15 minutes),
each a Redis counter made with SET NX EX + INCR (the window starts at the first
failure and the counter expires with it):

    per email + client address   SIGHTLINE_SIGNIN_MAX_FAILURES (10)    one guesser, one account
    per client address           ..._MAX_FAILURES_PER_IP (100)         one address, many accounts
    per email, from anywhere     ..._MAX_FAILURES_PER_EMAIL (50)       many addresses, one account

When any counter is full, `/signin` answers 429 with Retry-After *before* the
password is checked: a right password is refused too (else a guesser would
learn when they hit), and the answer is the same whether or not the email has
an account (unknown emails are counted like known ones). A successful sign-in
is never counted and forgives that email's failures (a person who mistyped
and then got it right starts afresh) but not the address's, so one valid
account cannot wipe the slate for spraying others from the same address.

Emails are hashed in key names: Redis holds no address. If Redis cannot be
reached, sign-in goes on without the limit (logged `signin_limit_unavailable`):
the password check itself stays as slow as ever, and a Redis outage must not
lock every user out of the app that shows them the outage.

Must never: say which counter is full, or store an email or password.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from config import get_settings
from core.redis import get_redis
from web.tracking.limits import address_key

log = logging.getLogger(__name__)

PREFIX = "sightline:signin:failed"


@dataclass(frozen=True)
class _Counter:
    key: str
    limit: int


def _counters(email: str, ip: str | None) -> list[_Counter]:
    limits = get_settings().signin_limits
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    # An IPv6 client picks any address of its /64: counted as one, like an IPv4 address.
    address = address_key(ip) or "unknown"
    return [
        _Counter(f"{PREFIX}:email-ip:{account}:{address}", limits.per_email_ip),
        _Counter(f"{PREFIX}:ip:{address}", limits.per_ip),
        _Counter(f"{PREFIX}:email:{account}", limits.per_email),
    ]


def retry_after(email: str, ip: str | None) -> int | None:
    """Seconds until this email may try again from this address, or None if it may now."""
    counters = _counters(email, ip)
    try:
        redis = get_redis()
        values = redis.mget([c.key for c in counters])
        full = [c for c, v in zip(counters, values, strict=True) if v and int(v) >= c.limit]
        if not full:
            return None
        ttls = [int(redis.ttl(c.key)) for c in full]
    except RedisError as exc:
        log.warning("signin_limit_unavailable error=%s", type(exc).__name__)
        return None
    window = get_settings().signin_limits.window_seconds
    # ttl is -2 if the key expired since MGET: let the next attempt through.
    waits = [t if t > 0 else (window if t == -1 else 0) for t in ttls]
    wait = max(waits)
    return wait if wait > 0 else None


def record_failure(email: str, ip: str | None) -> None:
    window = get_settings().signin_limits.window_seconds
    try:
        pipe = get_redis().pipeline(transaction=True)
        for counter in _counters(email, ip):
            pipe.set(counter.key, 0, ex=window, nx=True)
            pipe.incr(counter.key)
        pipe.execute()
    except RedisError as exc:
        log.warning("signin_limit_unavailable error=%s", type(exc).__name__)


def record_success(email: str, ip: str | None) -> None:
    email_ip, _address, account = _counters(email, ip)
    try:
        get_redis().delete(email_ip.key, account.key)
    except RedisError as exc:
        log.warning("signin_limit_unavailable error=%s", type(exc).__name__)
