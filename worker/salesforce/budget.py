"""An org's daily API allowance: what Salesforce says is used, and when to hold back.

Every REST response carries `Sforce-Limit-Info: api-usage=<used>/<max>` (a
rolling 24-hour count for the whole org, all integrations included). The
client hands each one to `OrgBudget.record`; the numbers live in Redis, keyed
by org, so every worker and the API see the same picture::

    share = used / max
    share < team's budget_share (default 80 %)  → everything is written
    share ≥ budget_share                        → engagement updates wait;
                                                  sends and replies still go
    403 REQUEST_LIMIT_EXCEEDED                  → the org is parked for
                                                  SIGHTLINE_SALESFORCE_PARK_SECONDS,
                                                  no call at all, then tried again

It also counts the calls Sightline itself made per UTC day, for the usage
endpoint. This module never calls Salesforce and never touches the database.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from core.redis import get_redis

_USAGE_RE = re.compile(r"api-usage=(\d+)/(\d+)")
DAY_SECONDS = 86400


@dataclass(frozen=True)
class Usage:
    used: int
    max: int
    at: float  # unix time of the response that said so

    @property
    def share(self) -> float:
        return self.used / self.max if self.max else 1.0


@dataclass(frozen=True)
class Parked:
    until: float
    reason: str


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """(used, max) from a Sforce-Limit-Info header, if it has api-usage."""
    match = _USAGE_RE.search(header or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class OrgBudget:
    """The shared view of one org's allowance (`org_key` from `profiles.OrgProfile`)."""

    def __init__(self, org_key: str) -> None:
        self.org_key = org_key
        self.redis = get_redis()

    def _key(self, what: str) -> str:
        return f"sightline:sf:{what}:{self.org_key}"

    def record(self, used: int, maximum: int) -> None:
        """Keep what the latest response said (a day, then it means nothing)."""
        self.redis.set(
            self._key("usage"),
            json.dumps({"used": used, "max": maximum, "at": time.time()}),
            ex=DAY_SECONDS,
        )

    def count_call(self) -> None:
        day = datetime.now(UTC).strftime("%Y%m%d")
        key = self._key(f"calls:{day}")
        with self.redis.pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, 2 * DAY_SECONDS)
            pipe.execute()

    def calls_today(self) -> int:
        day = datetime.now(UTC).strftime("%Y%m%d")
        value = self.redis.get(self._key(f"calls:{day}"))
        return int(_text(value)) if value is not None else 0

    def usage(self) -> Usage | None:
        raw = self.redis.get(self._key("usage"))
        if raw is None:
            return None
        data = json.loads(_text(raw))
        return Usage(int(data["used"]), int(data["max"]), float(data["at"]))

    def over_share(self, percent: int) -> bool:
        """True when the org has used `percent` % or more of its allowance."""
        usage = self.usage()
        return usage is not None and usage.share * 100 >= percent

    def park(self, seconds: int, reason: str) -> None:
        until = time.time() + seconds
        self.redis.set(
            self._key("parked"), json.dumps({"until": until, "reason": reason}), ex=seconds
        )

    def parked(self) -> Parked | None:
        raw = self.redis.get(self._key("parked"))
        if raw is None:
            return None
        data = json.loads(_text(raw))
        return Parked(float(data["until"]), str(data["reason"]))

    def unpark(self) -> None:
        self.redis.delete(self._key("parked"))
