"""What every bench prints beside its figures: how busy the machine was.

The machines these benches run on are shared (CI runners, a laptop with a
browser open, several test runs at once). A figure measured at load 6 on two
cores is not the figure of an idle machine, so each bench's summary line ends
with `load <1-minute load average>`, read when its timed part starts, and a
reader can tell an idle measurement from a busy one.
"""

from __future__ import annotations

import os
import time


def load_average() -> float:
    """The 1-minute load average (runnable processes, averaged), as the kernel reports it."""
    return os.getloadavg()[0]


def load_note(at: float | None = None) -> str:
    """`load 0.42`: the load average `at` (read now when None), for a summary line."""
    return f"load {load_average() if at is None else at:.2f}"


def cpu_busy(seconds: float = 2.0) -> float:
    """The share of all cores busy (user, system, steal …: not idle or iowait) over `seconds`."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    spent = total1 - total0
    return 0.0 if spent <= 0 else 1.0 - (idle1 - idle0) / spent


def wait_until_quiet(busy_below: float = 0.25, max_seconds: float = 120.0) -> tuple[float, float]:
    """Wait (up to `max_seconds`) until the cores are less than `busy_below` busy.

    A heavy run leaves work behind it for a minute or more (the database's
    checkpoint and vacuum, servers winding down); a run started in it measured
    a fifth slower. Returns (seconds waited, the last busy share)."""
    start = time.monotonic()
    busy = cpu_busy()
    while busy >= busy_below and time.monotonic() - start < max_seconds:
        busy = cpu_busy()
    return time.monotonic() - start, busy
