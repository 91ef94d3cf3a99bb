"""Reply text: our extractor against the kept libraries, on our labelled fixtures.

Run (the libraries are not project dependencies; use a scratch virtualenv):

    python -m venv /tmp/replylibs
    /tmp/replylibs/bin/pip install --require-hashes -r requirements.txt
    /tmp/replylibs/bin/pip install mail-parser-reply==1.36 quotequail==0.5.4
    /tmp/replylibs/bin/python bench/reply_text_libraries.py [-v]

For every fixture labelled ``reply`` in tests/fixtures/mail/labels.json it takes
the same decoded body (``mimetext.body_text``) and compares, whitespace
normalised, the labelled new text with what each method returns:

    ours                 worker.matching.replytext.new_text
    mail-parser-reply    EmailReplyParser(languages=[...]).parse_reply(text=body)
    quotequail           quotequail.unwrap(body)["text_top"] (the body when no quote)
    ... + our cut        the library's output, then our signature/quote cut

It prints exact-match counts and milliseconds per message (-v lists misses).
This decided whether to adopt a library: see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.machine import load_average, load_note  # noqa: E402
from worker.matching.mimetext import body_text, parse_bytes  # noqa: E402
from worker.matching.replytext import new_text  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "mail"
LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "sv", "da", "pl", "ja"]


def _methods() -> dict[str, Callable[[str], str]]:
    try:
        import quotequail  # type: ignore[import-not-found, unused-ignore]
        from mailparser_reply import (  # type: ignore[import-not-found, unused-ignore]
            EmailReplyParser,
        )
    except ImportError:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2) from None
    parser = EmailReplyParser(languages=LANGUAGES)

    def mail_parser_reply(body: str) -> str:
        return str(parser.parse_reply(text=body) or "")

    def quotequail_top(body: str) -> str:
        unwrapped = quotequail.unwrap(body)
        return str(unwrapped.get("text_top", "")) if unwrapped else body

    return {
        "ours": new_text,
        "mail-parser-reply": mail_parser_reply,
        "quotequail": quotequail_top,
        "mail-parser-reply + our cut": lambda body: new_text(mail_parser_reply(body)),
        "quotequail + our cut": lambda body: new_text(quotequail_top(body)),
    }


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    load = load_average()  # before this bench's own work: how busy the machine already was
    labels = json.loads((FIXTURES / "labels.json").read_text(encoding="utf-8"))
    names = sorted(n for n, label in labels.items() if label["kind"] == "reply")
    methods = _methods()
    exact = dict.fromkeys(methods, 0)
    seconds = dict.fromkeys(methods, 0.0)
    for name in names:
        body = body_text(parse_bytes((FIXTURES / name).read_bytes()))
        wanted = _norm(labels[name]["text"] or "")
        for method, extract in methods.items():
            started = time.perf_counter()
            got = _norm(extract(body))
            seconds[method] += time.perf_counter() - started
            if got == wanted:
                exact[method] += 1
            elif verbose:
                print(f"miss {method}: {name}: {got[:100]!r}")
    print(f"$ python bench/reply_text_libraries.py  ({load_note(load)})")
    for method in methods:
        share = exact[method] / len(names)
        print(
            f"{method:<28} exact {exact[method]:>2}/{len(names)} ({share:4.0%})"
            f"  {seconds[method] * 1000 / len(names):6.3f} ms/message"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
