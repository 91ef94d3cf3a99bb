"""Which mailboxes want a sync: a Redis set for de-duplication, a stream for delivery.

A push (Gmail, Graph, IDLE, EWS), a poll or a follow-up step asks for a sync of
a mailbox; the `sync` processes (`worker.sync.drain`) take many at a time. Three
keys, all touched only here::

    want(id) ──one script──▶ SADD wanted id ── new? ──▶ XADD requests {m: id}
                                               member already: nothing (one waits)
    want(id, delay) ──▶ ZADD later id due (the earliest due wins)
        a drainer's round: due members of `later` ──same script──▶ wanted + requests

    drainer: XREADGROUP group "sync" (COUNT n) ──▶ SREM wanted ids ──▶ sync each
             ──▶ XACK + XDEL
       crash between the read and the XACK: the entries stay pending in the group,
       owned by the dead consumer; their idle time grows (a live drainer renews its
       in-flight entries with XCLAIM … JUSTID every third of the lease) and after
       the lease (`LEASE_SECONDS`) any drainer's XAUTOCLAIM takes them over, and
       takes their ids out of the set (the dead one may not have)

Why a set *and* a stream: the set alone (SPOP) loses an id whose drainer dies
after popping it; a list (LMOVE to a per-process list) needs someone to find a
dead process's list. A stream's consumer group keeps the claimed-but-unfinished
entries with their owner and idle time, and XAUTOCLAIM hands them to a survivor:
at-least-once delivery without a registry of our own. The set keeps a burst of
pushes for one mailbox to one waiting entry: the stream holds at most one
waiting entry per mailbox, so its length is bounded by the number of mailboxes.
An id leaves the set when a drainer *claims* it, before its sync begins, so a
push that arrives during the sync queues exactly one more: the sync that began
before the push may have missed its mail. (The old per-mailbox RQ job, with its
"queued" marker dropped as the job started, had the same shape; it cost an RQ
job's bookkeeping per push, ~40 % of a push sync's CPU.)

Cost per push: one EVALSHA (SADD, XADD). Per sync, amortised over a batch: an
XREADGROUP, an SREM, an XACK and an XDEL per batch, not per mailbox.
Must never: drop an entry before its sync finished (XACK comes last), or hold a
mailbox's lock (that is `worker.sync.engine.mailbox_lock`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from redis.exceptions import ResponseError

from core.redis import get_redis

log = logging.getLogger(__name__)

WANTED_KEY = "sightline:sync:wanted"
STREAM_KEY = "sightline:sync:requests"
LATER_KEY = "sightline:sync:later"
GROUP = "sync"
# A claimed entry whose drainer has not renewed it for this long is taken over.
# Renewed every third of it, so a live drainer never loses one; a SIGKILLed
# drainer's mailboxes are synced by another within this (plus a round).
LEASE_SECONDS = 30.0
PROMOTE_PER_ROUND = 500

# SADD, and XADD only for an id that was not already waiting: one entry per mailbox.
_WANT = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'm', ARGV[1])
  return 1
end
return 0
"""

# Due delayed syncs join the wanted set and the stream, unless one already waits.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local added = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  if redis.call('SADD', KEYS[2], id) == 1 then
    redis.call('XADD', KEYS[3], '*', 'm', id)
    added = added + 1
  end
end
return added
"""


# Ids in the set with no entry in the stream (pending ones included) get one again.
_REQUEUE_STRANDED = """
local listed = {}
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+')) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then listed[fields[i + 1]] = true end
  end
end
local requeued = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not listed[id] then
    redis.call('XADD', KEYS[2], '*', 'm', id)
    requeued = requeued + 1
  end
end
return requeued
"""


@dataclass(frozen=True)
class Claimed:
    """One stream entry a drainer holds: acknowledge it once its sync is done."""

    entry_id: str
    mailbox_id: int


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def want(mailbox_id: int, redis: Redis | None = None) -> bool:
    """Ask for a sync of the mailbox. True if queued, False if one was already waiting."""
    client = redis if redis is not None else get_redis()
    return bool(client.eval(_WANT, 2, WANTED_KEY, STREAM_KEY, str(mailbox_id)))


def want_many(mailbox_ids: list[int], redis: Redis | None = None) -> int:
    """`want` for many mailboxes in one round trip (the poll). Returns how many were queued."""
    if not mailbox_ids:
        return 0
    client = redis if redis is not None else get_redis()
    with client.pipeline(transaction=False) as pipe:
        for mailbox_id in mailbox_ids:
            pipe.eval(_WANT, 2, WANTED_KEY, STREAM_KEY, str(mailbox_id))
        return sum(int(bool(r)) for r in pipe.execute())


def want_later(mailbox_id: int, delay: float, redis: Redis | None = None) -> bool:
    """Ask for a sync in `delay` seconds (the earliest asked wins). True if it is new."""
    client = redis if redis is not None else get_redis()
    due = time.time() + max(delay, 0.0)
    return bool(client.zadd(LATER_KEY, {str(mailbox_id): due}, lt=True))


def promote_due(redis: Redis | None = None, now: float | None = None) -> int:
    """Move delayed syncs whose time has come into the wanted set. Returns how many."""
    client = redis if redis is not None else get_redis()
    moment = time.time() if now is None else now
    return int(
        cast(
            int,
            client.eval(
                _PROMOTE, 3, LATER_KEY, WANTED_KEY, STREAM_KEY, f"{moment:.3f}", PROMOTE_PER_ROUND
            ),
        )
    )


def requeue_stranded(redis: Redis | None = None) -> int:
    """Give a stream entry to every waiting id that has none. Returns how many.

    An id in the set promises one entry in the stream; one without (left by a
    drainer that died before its SREM, before `Consumer.take_over` took such ids
    out of the set) would make every later `want` of its mailbox a no-op. One
    script: a `want` cannot interleave. Costs an XRANGE of the whole stream (one
    entry per waiting or claimed mailbox); the drainers run it at start and every
    few minutes.
    """
    client = redis if redis is not None else get_redis()
    return int(cast(int, client.eval(_REQUEUE_STRANDED, 2, WANTED_KEY, STREAM_KEY)))


def waiting(redis: Redis | None = None) -> list[int]:
    """The mailboxes whose sync waits to be claimed (unordered)."""
    client = redis if redis is not None else get_redis()
    return sorted(int(_text(m)) for m in client.smembers(WANTED_KEY))


def scheduled(redis: Redis | None = None) -> dict[int, float]:
    """Delayed syncs: mailbox → when (epoch seconds)."""
    client = redis if redis is not None else get_redis()
    members: Any = client.zrange(LATER_KEY, 0, -1, withscores=True)
    return {int(_text(m)): float(score) for m, score in members}


def backlog(redis: Redis | None = None) -> dict[str, int]:
    """How many syncs wait, are claimed and not finished, and are scheduled for later."""
    client = redis if redis is not None else get_redis()
    with client.pipeline(transaction=False) as pipe:
        pipe.scard(WANTED_KEY)
        pipe.xlen(STREAM_KEY)
        pipe.zcard(LATER_KEY)
        waiting_count, length, later = pipe.execute()
    return {
        "waiting": int(waiting_count),
        "claimed": max(int(length) - int(waiting_count), 0),
        "later": int(later),
    }


def consumer_name() -> str:
    """Unique per process and start: a restarted drainer must not inherit a dead one's entries."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Consumer:
    """One drainer's side of the stream: claim, renew, acknowledge, take over the dead's.

    Args:
        name: this consumer's name in the group (`consumer_name()`).
        lease_seconds: how long a claimed entry may go unrenewed before another
            consumer may take it over.
    """

    def __init__(
        self, name: str, *, lease_seconds: float = LEASE_SECONDS, redis: Redis | None = None
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.name = name
        self.lease_ms = int(lease_seconds * 1000)
        self.redis = redis if redis is not None else get_redis()
        self.ensure_group()
        # Listed in XINFO CONSUMERS from the start, not only after its first entry.
        self.redis.xgroup_createconsumer(STREAM_KEY, GROUP, name)

    def ensure_group(self) -> None:
        """Create the consumer group (reading from the start: entries queued before count)."""
        try:
            self.redis.xgroup_create(STREAM_KEY, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def claim(self, count: int, block_ms: int | None) -> list[Claimed]:
        """Take up to `count` new entries (waiting up to `block_ms`); their ids leave the set.

        The SREM after the read: a push between the two finds the id still
        waiting and adds nothing, which is right, since the sync begins after both.
        """
        try:
            answer: Any = self.redis.xreadgroup(
                GROUP, self.name, {STREAM_KEY: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group()  # the stream was deleted (Redis emptied): start again
            return []
        claimed = self._entries(answer[0][1] if answer else [])
        if claimed:
            self.redis.srem(WANTED_KEY, *{str(c.mailbox_id) for c in claimed})
        return claimed

    def take_over(self, count: int = 100) -> list[Claimed]:
        """Entries another consumer claimed and stopped renewing for a lease: ours now."""
        answer: Any = self.redis.xautoclaim(
            STREAM_KEY, GROUP, self.name, min_idle_time=self.lease_ms, start_id="0-0", count=count
        )
        claimed = self._entries(answer[1] if len(answer) > 1 else [])
        if claimed:
            # The dead consumer may have died (or lost XREADGROUP's answer to a Redis
            # restart, and read again) before its SREM: left in the set, these ids
            # would turn every later `want` into a no-op, and the mailbox would never
            # be synced again. The sync taking them over begins after any push since.
            self.redis.srem(WANTED_KEY, *{str(c.mailbox_id) for c in claimed})
            log.warning(
                "sync_requests_taken_over consumer=%s mailboxes=%s",
                self.name,
                ",".join(str(c.mailbox_id) for c in claimed),
            )
        return claimed

    def renew(self, entries: list[Claimed]) -> None:
        """Reset the idle time of entries still in hand, so nobody takes them over."""
        if entries:
            self.redis.xclaim(
                STREAM_KEY, GROUP, self.name, 0, [e.entry_id for e in entries], justid=True
            )

    def done(self, entries: list[Claimed]) -> None:
        """Acknowledge and delete finished entries (their syncs are committed)."""
        if not entries:
            return
        ids = [e.entry_id for e in entries]
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(STREAM_KEY, GROUP, *ids)
            pipe.xdel(STREAM_KEY, *ids)
            pipe.execute()

    def forget_idle_consumers(self, idle_seconds: float = 3600.0) -> int:
        """Drop consumers with nothing pending that were idle this long (restarted processes)."""
        dropped = 0
        for info in self.redis.xinfo_consumers(STREAM_KEY, GROUP):
            name = _text(info.get("name"))
            if name == self.name or int(info.get("pending", 0)) > 0:
                continue
            if int(info.get("idle", 0)) >= idle_seconds * 1000:
                dropped += int(self.redis.xgroup_delconsumer(STREAM_KEY, GROUP, name))
        return dropped

    def _entries(self, raw: list[Any]) -> list[Claimed]:
        claimed: list[Claimed] = []
        malformed: list[str] = []
        for entry_id, fields in raw:
            if not fields:  # deleted meanwhile (acknowledged by a slow former owner)
                malformed.append(_text(entry_id))
                continue
            value = fields.get(b"m", fields.get("m"))
            try:
                claimed.append(Claimed(_text(entry_id), int(_text(value))))
            except (TypeError, ValueError):
                log.error("sync_request_malformed entry_id=%s", _text(entry_id))
                malformed.append(_text(entry_id))
        if malformed:
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(STREAM_KEY, GROUP, *malformed)
                pipe.xdel(STREAM_KEY, *malformed)
                pipe.execute()
        return claimed
