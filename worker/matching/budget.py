"""Classification's time budget: a deadline the readers check between their steps.

What this module owns: the one deadline ``classify_message`` runs under, and the
``OverBudget`` error that says it passed. Every pattern applied to mail runs in
linear time on capped input (tests/unit/matching/test_regex_linear.py), so a
message's cost is bounded by its size; the budget bounds the sum, whatever the
message holds, so one message can never hold a mailbox's sync for long.

Why a cooperative deadline, not a signal or a process:

- ``SIGALRM`` can be armed only from the main thread, and the process has one
  alarm: in the ``sync`` process (SyncWorker, which runs each job in its main
  thread) it is the job timeout's, and arming our own would silently disarm RQ's.
- A child process per message would cost more than classifying it (a push sync
  spends 15-20 ms in all).
- A deadline in a ``ContextVar`` works in any thread (each thread has its own
  context) and costs one clock read per check. The readers check it between
  steps: per chunk of bytes fed to the MIME parser, per part, per line, per
  recipient. What runs between two checks is one linear pass over capped text
  (at most a few milliseconds), which bounds how far past its budget a message
  can run.

``OverBudget`` is an ``Exception`` so that it unwinds through ordinary code; no
reader catches ``Exception`` broadly, and ``classify_message`` turns it into a
quarantined classification (kept, visible, retried; never read as ``other``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["DEFAULT_BUDGET_SECONDS", "OverBudget", "check_budget", "time_budget"]

DEFAULT_BUDGET_SECONDS = 1.5
"""Wall-clock budget for classifying one message (the sync reads
``SIGHTLINE_CLASSIFY_BUDGET_MS``). Ordinary mail takes 1-5 ms and the worst
hostile layouts we know of well under a second on capped input. 1.5 s, not 2:
with the overshoot of one step and a process start, the command line still
answers every file within 2 s."""

# (deadline on the monotonic clock, the budget in seconds it came from)
_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("classify_deadline", default=None)


class OverBudget(Exception):  # noqa: N818 - reads as the condition it names
    """Classification ran past its time budget."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"classification took longer than {format_seconds(seconds)}")
        self.seconds = seconds


@contextmanager
def time_budget(seconds: float | None) -> Iterator[None]:
    """Run the block under a deadline ``seconds`` from now (None: no deadline).

    A nested budget never extends an outer one. The previous deadline is
    restored on exit, however the block ends (an RQ job timeout raised by a
    signal too).
    """
    outer = _DEADLINE.get()
    current = None if seconds is None else (time.monotonic() + max(seconds, 0.0), seconds)
    if outer is not None and (current is None or outer[0] < current[0]):
        current = outer
    token = _DEADLINE.set(current)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check_budget() -> None:
    """Raise ``OverBudget`` if the current deadline has passed."""
    current = _DEADLINE.get()
    if current is not None and time.monotonic() > current[0]:
        raise OverBudget(current[1])


def format_seconds(seconds: float) -> str:
    """``2 s``, ``0.5 s``: how a budget reads in a reason a person sees."""
    return f"{seconds:g} s"
