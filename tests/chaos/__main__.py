"""`python -m tests.chaos`: the chaos run at full size (`make chaos`); see harness.py.

    python -m tests.chaos                 # 10,000 hits, ~1,000 sends, Redis restarted (SIGTERM)
    python -m tests.chaos --redis-crash   # the same, Redis SIGKILLed: measures the fsync window
    python -m tests.chaos --size ci       # the short form `make test` runs

Prints what happened and every broken promise; the last line is
`chaos: lost <n>, duplicated <n>, missing tasks <n>, wrong halts <n>, dead letters <n>,
shed <n>, strangers <n>` (tests/chaos/result.py). Exit status 1 when a correctness
check failed (with `--redis-crash`, hits lost inside the fsync window are reported
but do not fail the run), else 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tests.chaos.harness import CI, FULL, run_chaos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--size", choices=("full", "ci"), default="full")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument(
        "--redis-crash",
        action="store_true",
        help="SIGKILL Redis instead of restarting it gracefully (the everysec fsync window)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)

    work_dir = Path(tempfile.mkdtemp(prefix="sightline-chaos-"))
    say(f"chaos: every process's log is kept in {work_dir / 'logs'}")
    result = run_chaos(
        FULL if args.size == "full" else CI,
        seed=args.seed,
        redis_crash=args.redis_crash,
        work_dir=work_dir,
        say=say,
    )
    for line in result.report():
        print(line, flush=True)
    failed = (
        result.lost - result.hits_lost_in_fsync_window
        or result.duplicated
        or result.tasks_missing
        or result.wrong_halts
        or result.dead_letters
        or result.shed
        or result.strangers
        or result.secrets_in_logs
        or result.unexpected_exits
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
