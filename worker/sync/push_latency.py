"""How promptly a mailbox's push tells us about new mail: measured, never assumed.

Servers advertise push and deliver it very differently: Dovecot's IDLE reports a
new message within a second; Courier's (Debian's defaults, no FAM) looks at the
folder every IMAP_IDLE_TIMEOUT = 60 s; GNU Mailutils' reports nothing until the
client ends IDLE. Gmail and Graph notifications usually take seconds. So each
mailbox's push is judged by what it did, from the syncs it caused::

    push (IDLE EXISTS, webhook) ──request_sync(pushed=True)──▶ Redis: pushed_at = P
                                   (SET NX: the earliest push since the last sync began)
    sync begins at S, takes P (GETDEL), lists messages; for each that arrived (R)
    after the previous sync began:
        a push came, R ≤ P + SKEW          → delay P - R       the push was that late
        no push came, S - R > PROMPT       → delay S - R       a poll found what push missed
        otherwise                          → nothing learned (it arrived after the push,
                                             or a poll got there first within PROMPT)

The last `DELAYS_KEPT` delays are stored on the mailbox (`push_delays`), and the
verdict (`push_prompt`): True when the last `MEASUREMENTS_NEEDED` are all within
`PROMPT_SECONDS` (5 s), False as soon as the newest is not, None until measured.
One late delivery is enough to stop trusting a push; only a run of prompt ones
earns it back (a server that polls every 60 s looks prompt by luck 1 time in
12, three times in a row 1 in 1,728). Dovecot measures 0-2 s here (INTERNALDATE
has whole seconds); Courier with its defaults anything up to 60 s.

Arrival times are the server's (IMAP INTERNALDATE, Gmail internalDate, Graph
receivedDateTime), to the second, on the server's clock: a delay below
-`SKEW_SECONDS` says the clocks differ, and is not counted (an unmeasured push
is not trusted, so a skewed clock costs syncs, never a missed reply).

Who reads the verdict: the poll (`worker.sync.polling.poll_mailboxes`) syncs a
slow-push mailbox every SIGHTLINE_SLOW_PUSH_POLL_SECONDS; the fresh-before-send
rule (`worker.sequences.freshness`) counts only a prompt push as freshness.

A push can only be trusted while it is there. Gmail's watch and Graph's
subscription are rows (`MailboxPush`: renewed, not expired, no error); an IMAP
IDLE or EWS stream is held by the `listener`, which marks it live in Redis
(`mark_live`: the moment it came up, in a key that lapses `LIVE_TTL_SECONDS`
after the provider last said its connection holds) and clears the mark when the
connection drops.

Cost: one Redis SET per push, one GETDEL per sync, a mailbox UPDATE only when a
sync learned something, and one SET per held connection every half minute (the
listener's `LiveMarks` writes them in one Redis call five times a second).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from redis import Redis, RedisError

from core.models import utcnow
from core.redis import get_redis
from worker.sync.base import HeaderSummary

log = logging.getLogger(__name__)

PUSHED_KEY = "sightline:push:pushed_at:{mailbox_id}"
# A push marker no sync consumed within this long is stale (the sync never ran).
PUSHED_TTL_SECONDS = 3600
PROMPT_SECONDS = 5.0
MEASUREMENTS_NEEDED = 3
DELAYS_KEPT = 5
SKEW_SECONDS = 2.0

LIVE_KEY = "sightline:push:live:{mailbox_id}"
# Three missed IDLE heartbeats (worker.sync.base.PUSH_ALIVE_SECONDS), two missed EWS
# keep-alives (worker.sync.exchange_stream).
LIVE_TTL_SECONDS = 90


def mark_live(mailbox_id: int) -> None:
    """The listener's connection for this mailbox (IDLE confirmed, stream open) holds.

    The first mark stores the moment (`live_since`); a heartbeat only extends the
    key's life. Mail that arrived before that moment was never pushed: only a sync
    that began after it has seen everything the push has not.
    """
    _mark(get_redis(), [mailbox_id])


# Each key: set to the moment if absent, its life extended either way. One command
# for a batch: as a pipeline of SET NX + EXPIRE per mark, packing the commands was
# a tenth of the listener's time holding the GIL at 10,000 IDLEs (~330 marks a second).
_MARK = """
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'NX', 'EX', ARGV[2])
  redis.call('EXPIRE', key, ARGV[2])
end
"""
MARKS_PER_CALL = 1000  # bounds how long one call holds Redis


def _mark(client: Redis, mailbox_ids: Iterable[int]) -> None:
    now = f"{utcnow().timestamp():.3f}"
    keys = [LIVE_KEY.format(mailbox_id=m) for m in mailbox_ids]
    for start in range(0, len(keys), MARKS_PER_CALL):
        chunk = keys[start : start + MARKS_PER_CALL]
        client.eval(_MARK, len(chunk), *chunk, now, LIVE_TTL_SECONDS)


def clear_live(mailbox_id: int) -> None:
    """The listener's connection for this mailbox is gone."""
    get_redis().delete(LIVE_KEY.format(mailbox_id=mailbox_id))


class LiveMarks:
    """`mark_live` and `clear_live` for many connections: marks written in batches.

    The listener's 10,000 IDLEs confirm ~330 rounds a second; a Redis round trip
    for each held a round thread and was the biggest part of a round's cost.
    `mark` only notes the mailbox; a thread writes every noted mark in one Redis
    call (a script) each `every` seconds. A mark lands up to that much later, which
    only makes `live_since` later (a sync between the two is not counted as
    fresh: safe). `clear` drops a noted mark and deletes the key under the lock
    the writer holds for its whole write, so a mark noted before a connection
    dropped can never land after its clear and call a dead connection live.
    A write Redis refuses keeps its marks for the next (they lapse meanwhile,
    which stops freshness trusting them: safe too).
    """

    def __init__(self, every: float = 0.2) -> None:
        self.every = every
        self._noted: set[int] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-marks", daemon=True)
        self._thread.start()

    def mark(self, mailbox_id: int) -> None:
        with self._lock:
            self._noted.add(mailbox_id)

    def clear(self, mailbox_id: int) -> None:
        with self._lock:
            self._noted.discard(mailbox_id)
            clear_live(mailbox_id)

    def flush(self) -> None:
        """Write every noted mark now (the thread does this every `every` seconds)."""
        with self._lock:
            noted, self._noted = self._noted, set()
            if not noted:
                return
            try:
                _mark(get_redis(), noted)
            except (RedisError, OSError) as exc:
                self._noted |= noted
                log.warning("live_marks_failed count=%d error=%s", len(noted), exc)

    def close(self) -> None:
        """Stop writing; marks noted and not written are dropped (their keys lapse)."""
        self._closed.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._closed.wait(self.every):
            try:
                self.flush()
            except Exception:  # the writer must outlive anything one write raises
                log.exception("live_marks_write_failed")


def live_among(mailbox_ids: list[int]) -> set[int]:
    """Those of `mailbox_ids` whose connection the listener holds now (one MGET per 1,000)."""
    redis = get_redis()
    live: set[int] = set()
    for start in range(0, len(mailbox_ids), 1000):
        chunk = mailbox_ids[start : start + 1000]
        marks = redis.mget([LIVE_KEY.format(mailbox_id=m) for m in chunk])
        live.update(m for m, mark in zip(chunk, marks, strict=True) if mark is not None)
    return live


def as_time(raw: bytes | str | None) -> datetime | None:
    """A moment stored in Redis as epoch seconds (None when absent or unreadable)."""
    try:
        return datetime.fromtimestamp(float(raw), UTC) if raw is not None else None
    except (TypeError, ValueError):
        return None


def live_since(mailbox_id: int) -> datetime | None:
    """Since when the listener holds this mailbox's IDLE or stream; None: it does not."""
    return as_time(get_redis().get(LIVE_KEY.format(mailbox_id=mailbox_id)))


def pending_push(mailbox_id: int) -> datetime | None:
    """The earliest push no sync has taken yet, or None."""
    return as_time(get_redis().get(PUSHED_KEY.format(mailbox_id=mailbox_id)))


def note_push(mailbox_id: int, at: float | None = None, redis: Redis | None = None) -> None:
    """Remember that a push said new mail is here (the earliest one until a sync takes it).

    `redis` may be a pipeline: a push then costs the endpoint one round trip in all.
    """
    moment = at if at is not None else utcnow().timestamp()
    client = redis if redis is not None else get_redis()
    client.set(
        PUSHED_KEY.format(mailbox_id=mailbox_id), f"{moment:.3f}", nx=True, ex=PUSHED_TTL_SECONDS
    )


def delays_seen(
    messages: Iterable[HeaderSummary],
    *,
    pushed_at: float | None,
    sync_started: datetime,
    previous_sync: datetime | None,
) -> list[float]:
    """What the listed messages say about the push's delay (see the module's table)."""
    if previous_sync is None:
        return []  # a first sync lists old mail: nothing about the push
    started = sync_started.timestamp()
    since = previous_sync.timestamp() - SKEW_SECONDS
    delays = []
    for message in messages:
        if message.received_at is None:
            continue
        arrived = message.received_at.timestamp()
        if arrived < since:
            continue  # seen by an earlier sync's window, or moved in from elsewhere
        if pushed_at is not None:
            delay = pushed_at - arrived
            if delay < -SKEW_SECONDS:
                continue  # arrived after that push (its own push is still to come)
        else:
            delay = started - arrived
            if delay <= PROMPT_SECONDS:
                continue  # a poll found it first: says nothing against the push
        delays.append(round(max(delay, 0.0), 1))
    return delays


def verdict(delays: list[float]) -> bool | None:
    """Prompt (True), slow (False), or not known yet (None), from delays oldest first."""
    if not delays:
        return None
    if delays[-1] > PROMPT_SECONDS:
        return False
    recent = delays[-MEASUREMENTS_NEEDED:]
    if len(recent) == MEASUREMENTS_NEEDED and all(d <= PROMPT_SECONDS for d in recent):
        return True
    return None if all(d <= PROMPT_SECONDS for d in delays) else False


def delay_values(mailbox_id: int, known: list[float] | None, new: list[float]) -> dict[str, Any]:
    """The mailbox columns that keep `new` delays and their verdict (the sync's own
    closing UPDATE writes them: no statement of their own)."""
    delays = [*(known or []), *new][-DELAYS_KEPT:]
    prompt = verdict(delays)
    log.info(
        "push_latency mailbox_id=%s new=%s prompt=%s",
        mailbox_id,
        ",".join(f"{d:.1f}" for d in new),
        prompt,
    )
    return {"push_delays": delays, "push_prompt": prompt}
