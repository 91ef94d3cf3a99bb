"""Command line: ``python -m worker.matching classify FILE [FILE...]``.

Prints one JSON object per file, one per line, in input order (the contract of
issue 6, used by our own checks; keep it stable):

    {"path", "kind", "refers_to", "bounce", "auto_reply", "text"}

A file that cannot be read (missing, a directory, no permission) still yields a
line, with kind ``other``, and the command carries on. Exit status 0, or 2 for
a usage error. Imports stay light: no database, Redis or settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from worker.matching.classify import OTHER, classify_message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m worker.matching")
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", help="classify raw .eml files")
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
            result = classify_message(raw)
        out.write(json.dumps(result.as_json(path), ensure_ascii=False) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
