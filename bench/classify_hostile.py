"""CPU time to classify hostile layouts: padded replies, and a message past the budget.

Run:  python bench/classify_hostile.py [--code DIR] [--limit SECONDS]

The layouts are tests/unit/matching/test_hostile_mail.py's (600 and 20,000 blank
lines, whitespace runs, rulers, deep quote chains, a 10,000-id References, 60 KB
of unclosed HTML tags, 2,000 nested multiparts ...) plus ~8 MiB of tiny MIME
parts. Each line: the layout, the thread's CPU seconds, the kind (with the
reason if quarantined), whether the reply's text and our Message-ID came out.

``--code DIR`` classifies with another checkout's ``worker.matching`` (e.g. one
from before classification had a time budget: ``git worktree add /tmp/before 4143015``); a layout
is stopped after ``--limit`` seconds (default 30) and shown as ``>30s``.
Timings are printed, never asserted (the tests assert the 2 s budget).
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import sys
import time
from pathlib import Path
from types import FrameType, ModuleType

REPO = Path(__file__).resolve().parent.parent


class _Late(BaseException):
    """Raised by the alarm: the layout took longer than the limit."""


def _late(signum: int, frame: FrameType | None) -> None:
    raise _Late


def _layouts() -> ModuleType:
    path = REPO / "tests" / "unit" / "matching" / "test_hostile_mail.py"
    spec = importlib.util.spec_from_file_location("hostile_layouts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose code classifies")
    parser.add_argument("--limit", type=int, default=30, help="seconds before a layout is stopped")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    sys.path.append(str(REPO))  # the layouts' own imports (tests.fuzz.profiles)
    from worker.matching.classify import classify_message

    hostile = _layouts()
    cases = dict(hostile.LAYOUTS)
    cases["~8 MiB of tiny MIME parts"] = hostile.slow_message()
    signal.signal(signal.SIGALRM, _late)
    print(f"$ python bench/classify_hostile.py --code {args.code}")
    for name, raw in cases.items():
        signal.alarm(args.limit)
        start = time.thread_time()
        try:
            result = classify_message(raw)
        except _Late:
            print(f"{name:45s}  >{args.limit}s")
            continue
        finally:
            signal.alarm(0)
        seconds = time.thread_time() - start
        reason = getattr(result, "reason", None)
        kind = f"{result.kind} ({reason})" if reason else result.kind
        text = "text" if result.text and hostile.SAID in result.text else "-"
        ours = "our id" if hostile.OUR_ID in result.refers_to else "-"
        print(f"{name:45s} {seconds:7.3f}s  {kind:12s} {text:5s} {ours}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
