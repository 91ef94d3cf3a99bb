"""One thread per process keeps every held mailbox lock's lease alive.

A mailbox's sync lock (`worker.sync.engine.mailbox_lock`) is a lease: a
process that dies leaves it for at most the lease, and a sync that runs
longer renews it every third of the lease. That used to be a thread per
sync, started and joined around every one of them — at 150 push syncs a
second, a thread's start and join a few milliseconds apart, for a renewal
that a sync of a few milliseconds never needs. Here one daemon thread per
process renews whatever is held when it comes due, and sleeps otherwise.

A renewal is Redis's token-checked `reacquire`: it never takes a lock that
another holder has (a lease that lapsed and was taken meanwhile), and one
that comes after the sync released its lock fails harmlessly and is not
reported. After a fork the child starts with nothing held and its own thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from redis.exceptions import LockError, RedisError
from redis.lock import Lock

log = logging.getLogger("worker.sync.engine")


@dataclass(eq=False)
class Held:
    """A lock in hand and when its lease is next renewed."""

    lock: Lock
    mailbox_id: int
    lease: float
    due: float


class LeaseRenewer:
    """Renews the leases of the locks `hold` was given until `drop`; see the module docstring."""

    def __init__(self) -> None:
        self.start_empty()

    def start_empty(self) -> None:
        """Nothing held, no thread yet (a new process, or a forked child)."""
        self._wake = threading.Condition()
        self._held: set[Held] = set()
        self._thread: threading.Thread | None = None

    def hold(self, lock: Lock, mailbox_id: int, lease: float) -> Held:
        held = Held(lock, mailbox_id, lease, time.monotonic() + lease / 3)
        with self._wake:
            self._held.add(held)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="sync-lock-leases", daemon=True
                )
                self._thread.start()
            elif held.due < self._next_due_locked(exclude=held):
                self._wake.notify()
        return held

    def drop(self, held: Held) -> None:
        with self._wake:
            self._held.discard(held)

    def holding(self) -> int:
        with self._wake:
            return len(self._held)

    def _next_due_locked(self, exclude: Held | None = None) -> float:
        return min((h.due for h in self._held if h is not exclude), default=float("inf"))

    def _run(self) -> None:
        while True:
            with self._wake:
                now = time.monotonic()
                due = [h for h in self._held if h.due <= now]
                for held in due:
                    held.due = now + held.lease / 3
                if not due:
                    wait = self._next_due_locked() - now
                    self._wake.wait(None if wait == float("inf") else wait)
                    continue
            for held in due:
                self._renew(held)

    def _renew(self, held: Held) -> None:
        try:
            held.lock.reacquire()
        except LockError:
            with self._wake:
                still_held = held in self._held
                self._held.discard(held)
            if still_held:
                # Someone else holds it now: a second sync may overlap this one.
                # Harmless (natural keys), but worth seeing; renewing would take it.
                log.warning("sync_lock_lost mailbox_id=%s", held.mailbox_id)
        except RedisError as exc:  # Redis restarting: the next round tries again
            log.warning("sync_lock_renew_failed mailbox_id=%s error=%r", held.mailbox_id, exc)


RENEWER = LeaseRenewer()
# A forked child holds none of its parent's locks, and the parent's thread is not in it.
os.register_at_fork(after_in_child=RENEWER.start_empty)
