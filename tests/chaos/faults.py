"""The faults a chaos run injects, all of them transient: nothing here is a reason to give up.

- every few seconds a random worker (`worker`, `sync`), the `events` consumer or
  the `listener` is SIGKILLed (its whole process group) and started again;
  each of them at least once, first;
- Redis is restarted once, mid-run: gracefully (SIGTERM, the AOF is flushed), or
  with `crash=True` SIGKILLed, which may lose what was acknowledged in the last
  seconds before the crash (the everysec fsync window);
- Salesforce fails 10 % of calls with every error kind (503, 500, 502 from the
  edge, UNABLE_TO_LOCK_ROW, INVALID_SESSION_ID, a write applied but never
  answered, latency past the timeout), each kind also armed once, answers
  REQUEST_LIMIT_EXCEEDED to everything for a while; and the next `LOCKED_CALLS`
  composite calls lock every record a collection writes (UNABLE_TO_LOCK_ROW on
  each item, as when an admin's data load holds the rows). A flush round is a
  read and a write, per team: the rows in flight fail about three times in a
  row, at most `LOCKED_CALLS / 2` (6 < the product's 8 attempts), so a product
  that gives up on a row early makes dead letters. Counted in calls, not
  seconds: after a burst of faults the outbox backs off, and a window of time
  might meet no write at all.

Each of these ends: a killed process comes back, Redis comes back, Salesforce
answers again. A product that gives up on a row, a hit or a reply because of
them has lost it, and the checks say so (dead letters, lost, missing tasks).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.salesforce import FAULT_KINDS

KILLABLE = ("worker", "worker-2", "sync", "events", "listener")
LOCKED_CALLS = 12


def arm_salesforce(admin: Any, rng: random.Random, fault_skip: int, seed: int) -> None:
    """Every fault kind once (after a random number of calls), locked records for a while,
    then 10 % of calls at random."""
    for kind in FAULT_KINDS:
        seconds = 3.0 if kind in ("latency", "commit_then_hang") else None
        options: dict[str, Any] = {"skip": rng.randrange(0, fault_skip)}
        if seconds is not None:
            options["seconds"] = seconds
        admin.add_fault(kind, 1, **options)
    admin.add_fault("unable_to_lock_row", LOCKED_CALLS, match="/composite")
    admin.fault_rate(0.10, kinds=list(FAULT_KINDS), seed=seed, seconds=3.0)


@dataclass
class Storm:
    """When each fault fires, relative to the start of the load; `tick()` fires what is due.

    Times are monotonic seconds. `redis_at` is 0 once Redis was restarted.
    """

    services: Any
    stack: Any
    rng: random.Random
    kill_every: tuple[float, float]
    limit_seconds: float
    redis_crash: bool
    load_started: float
    load_estimate: float
    say: Any
    kills: Counter[str] = field(default_factory=Counter)
    redis_down: tuple[float, float] | None = None  # wall clock, down → back
    forced: list[str] = field(default_factory=list)
    redis_at: float = 0.0
    pause_events_at: float = 0.0
    limit_at: float = 0.0
    next_kill: float = 0.0

    def __post_init__(self) -> None:
        self.redis_at = self.load_started + 0.45 * self.load_estimate
        # Crash mode: the consumer is down for the seconds before the crash, so the
        # hits of the last fsync window live only in Redis (else it drains them
        # within a second and the window could never show).
        self.pause_events_at = self.redis_at - 4.0 if self.redis_crash else 0.0
        self.limit_at = self.load_started + 0.3 * self.load_estimate
        self.next_kill = self.load_started + self.rng.uniform(*self.kill_every)
        self.forced = list(KILLABLE)
        self.rng.shuffle(self.forced)

    def tick(self, now: float) -> None:
        if self.pause_events_at and now >= self.pause_events_at:
            self.pause_events_at = 0.0
            self.stack.kill("events")
            self.kills["events"] += 1
        if self.redis_at and now >= self.redis_at:
            self.redis_at = 0.0
            self.restart_redis()
            self.say(f"chaos: redis {'crashed' if self.redis_crash else 'restarted'}")
            if "events" not in self.stack.running:
                self.stack.start("events")
        if self.limit_at and now >= self.limit_at:
            self.limit_at = 0.0
            self.services.salesforce.admin.add_fault(
                "request_limit_exceeded", None, duration=self.limit_seconds
            )
        if now >= self.next_kill:
            victim = self.forced.pop() if self.forced else self.rng.choice(KILLABLE)
            if victim in self.stack.running:
                self.stack.restart(victim)  # SIGKILL the process group, then a fresh one
                self.kills[victim] += 1
            self.next_kill = now + self.rng.uniform(*self.kill_every)

    def restart_redis(self) -> None:
        began = time.time()
        self.services.redis.restart(crash=self.redis_crash)
        self.redis_down = (began, time.time())
