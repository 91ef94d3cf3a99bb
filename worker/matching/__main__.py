"""Command line: ``python -m worker.matching classify [--budget SECONDS] FILE [FILE...]``.

Prints one JSON object per file, one per line, in input order (a contract that
scripts and our own checks rely on; keep it stable):

    {"path", "kind", "refers_to", "bounce", "auto_reply", "text"}

``bounce`` is ``{"recipients": [{"address", "status", "hard", "delayed"}, ...]}``:
``delayed`` is true for a recipient the server is still trying (a delay notice
lists only such recipients and is never a failure); a 2.x.x status is success and
makes no recipient. ``kind`` is ``reply``, ``auto_reply``, ``bounce``,
``complaint`` or ``other``, or
``quarantined`` when the message could not be classified within its time budget
(``--budget``, default 1.5 s per file) or could not be read as mail; a quarantined
line adds a seventh key, ``reason`` ("classification took longer than 1.5 s").
Each line is written as soon as its file is done, as ASCII (non-ASCII
characters as JSON ``\\u`` escapes), so no character in a file's name or text
can split a line.

A file that cannot be read (missing, a directory, no permission) still yields a
line, with kind ``other``, and the command carries on. Exit status 0, or 2 for
a usage error. Imports stay light: no database, Redis or settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from worker.matching.budget import DEFAULT_BUDGET_SECONDS
from worker.matching.classify import OTHER, Classification, classify_message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m worker.matching")
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", help="classify raw .eml files")
    classify.add_argument(
        "--budget",
        type=_seconds,
        default=DEFAULT_BUDGET_SECONDS,
        metavar="SECONDS",
        help=f"time budget per file (default {DEFAULT_BUDGET_SECONDS:g})",
    )
    classify.add_argument("files", nargs="+", metavar="FILE")
    args = parser.parse_args(argv)

    out = sys.stdout
    for path in args.files:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            print(f"classify_unreadable path={path!r} error={exc.strerror}", file=sys.stderr)
            result = OTHER
        else:
            result = _classify_file(path, raw, args.budget)
        # ASCII JSON: a separator in a reply's text (U+2028, U+2029, NEL) or a
        # file name that is not UTF-8 cannot break or garble the line.
        out.write(json.dumps(result.as_json(path)) + "\n")
        out.flush()
    return 0


def _classify_file(path: str, raw: bytes, budget: float) -> Classification:
    try:
        return classify_message(raw, budget=budget)
    except Exception as exc:  # noqa: BLE001 - one line per file, whatever a file holds
        # Not an RQ job: no job timeout to let through. classify_message lets
        # errors it does not expect from hostile bytes through; here they still
        # get their line, and say so.
        print(f"classify_error path={path!r} error={type(exc).__name__}", file=sys.stderr)
        return Classification(
            kind="quarantined", reason=f"classification failed: {type(exc).__name__}"
        )


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 3600 seconds, got {value}")
    return seconds


if __name__ == "__main__":
    sys.exit(main())
