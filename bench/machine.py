"""What every bench prints beside its figures: how busy the machine was.

The machines these benches run on are shared (CI runners, a laptop with a
browser open, several test runs at once). A figure measured at load 6 on two
cores is not the figure of an idle machine, so each bench's summary line ends
with `load <1-minute load average>`, read when its timed part starts, and a
reader can tell an idle measurement from a busy one.
"""

from __future__ import annotations

import os


def load_average() -> float:
    """The 1-minute load average (runnable processes, averaged), as the kernel reports it."""
    return os.getloadavg()[0]


def load_note(at: float | None = None) -> str:
    """`load 0.42`: the load average `at` (read now when None), for a summary line."""
    return f"load {load_average() if at is None else at:.2f}"
