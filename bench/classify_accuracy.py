"""Accuracy and speed of worker.matching.classify on the shared labelled corpus.

Run:  python bench/classify_accuracy.py [-v] [CORPUS_DIR]   (-v lists every miss)
      (default: ../shared/corpus/bounces next to the repository)

Prints per-kind accuracy, bounce status accuracy, hard/soft accuracy and
messages per second. Scoring: a recipient's status or hard flag is compared
with the label at the same position; statuses of the
form X.0.9NN are sisimai internals and are not scored.

Delay notices (every recipient ``Action: delayed``, or "still retrying"
texts) are labelled ``bounce`` by the sisimai-derived labels, and are
``bounce`` for us too, with every recipient soft and ``delayed`` set (the
sequence engine records them and halts nothing); a line counts them.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.machine import load_average, load_note  # noqa: E402
from worker.matching import reason_wording, reasons  # noqa: E402
from worker.matching.classify import classify_message  # noqa: E402
from worker.matching.reason_wording import Wording  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "bounces"
FIXTURES = REPO / "tests" / "fixtures" / "mail"
_DELAY = re.compile(
    rb"(?im)^action:\s*delayed|warning message only|delayed \d+ hours"
    rb"|could not send message for past"
)


@dataclass
class Scores:
    """Counts behind every number the bench prints."""

    kind_total: Counter[str] = field(default_factory=Counter)
    kind_correct: Counter[str] = field(default_factory=Counter)
    delay_notices: int = 0
    delays_flagged: int = 0
    status_total: int = 0
    status_correct: int = 0
    hard_total: int = 0
    hard_correct: int = 0
    seconds: float = 0.0
    misses: list[str] = field(default_factory=list)

    def kind_accuracy(self, kind: str) -> float:
        return self.kind_correct[kind] / self.kind_total[kind] if self.kind_total[kind] else 1.0

    @property
    def status_accuracy(self) -> float:
        return self.status_correct / self.status_total if self.status_total else 1.0

    @property
    def hard_accuracy(self) -> float:
        return self.hard_correct / self.hard_total if self.hard_total else 1.0


def _is_delay_notice(raw: bytes) -> bool:
    failed = re.search(rb"(?im)^action:\s*failed", raw)
    return bool(_DELAY.search(raw)) and not failed


def score(corpus: Path, names: Iterable[str] | None = None, scores: Scores | None = None) -> Scores:
    """Classify the labelled files in ``corpus`` (all, or ``names``) and count agreements."""
    labels = json.loads((corpus / "labels.json").read_text())
    scores = scores or Scores()
    for name in sorted(labels if names is None else names):
        label = labels[name]
        raw = (corpus / name).read_bytes()
        started = time.perf_counter()
        result = classify_message(raw)
        scores.seconds += time.perf_counter() - started
        expected = label["kind"]
        scores.kind_total[expected] += 1
        delay = expected == "bounce" and _is_delay_notice(raw)
        if delay:
            scores.delay_notices += 1
            scores.delays_flagged += result.kind == "bounce" and result.delayed
        if result.kind == expected:
            scores.kind_correct[expected] += 1
        else:
            scores.misses.append(f"{name}: kind {result.kind}, label {expected}")
        if expected != "bounce" or result.kind != "bounce":
            continue
        for index, wanted in enumerate(label["recipients"]):
            got = result.bounce_recipients[index] if index < len(result.bounce_recipients) else None
            scores.hard_total += 1
            if got is not None and got.hard == wanted["hard"]:
                scores.hard_correct += 1
            else:
                scores.misses.append(f"{name}: hard, label {wanted['reason']}")
            if re.fullmatch(r"\d\.0\.9\d\d", wanted["status"]):
                continue
            scores.status_total += 1
            if got is not None and got.status == wanted["status"]:
                scores.status_correct += 1
            else:
                scores.misses.append(
                    f"{name}: status {got.status if got else None}, label {wanted['status']}"
                )
    return scores


def family(name: str) -> str:
    """The mail server a corpus file comes from: ``lhost-postfix-03.eml`` → lhost-postfix."""
    return re.sub(r"-\d+\.eml$", "", name)


class _Recording(Wording):
    """The product's wording, noting which phrase decided each text it read."""

    def __init__(self, base: Wording) -> None:
        super().__init__(base.rules, base.left_out)
        self.decided: set[str] = set()

    def reason(self, flat: str) -> str | None:
        phrase = self.deciding_phrase(flat)
        if phrase is not None:
            self.decided.add(phrase)
        return super().reason(flat)


def score_leave_one_family_out(corpus: Path) -> tuple[Scores, int]:
    """Score each family with the phrases only that family ever needed left out.

    A phrase "needed" by a family decided the reason of some text in one of its
    files. Leaving out the phrases no other family needed is scoring that
    family with rules written without it: what is left is wording other mail
    servers use too, RFC 3463 codes and the SMTP stage. Returns the summed
    scores and how many phrases were left out over all families.
    """
    labels = json.loads((corpus / "labels.json").read_text())
    by_family: dict[str, list[str]] = {}
    for name in labels:
        by_family.setdefault(family(name), []).append(name)
    needed: dict[str, set[str]] = {}
    for name_of_family, names in by_family.items():
        recording = _Recording(reasons.WORDING)
        with reason_wording.using(recording):
            score(corpus, names)
        needed[name_of_family] = recording.decided
    total = Scores()
    left_out = 0
    for name_of_family, names in by_family.items():
        elsewhere = set().union(*(v for k, v in needed.items() if k != name_of_family))
        only_here = frozenset(needed[name_of_family] - elsewhere)
        left_out += len(only_here)
        with reason_wording.using(reasons.WORDING.without(only_here)):
            score(corpus, names, total)
    return total, left_out


def score_fixtures(fixtures: Path = FIXTURES) -> tuple[Counter[str], Counter[str]]:
    """Per-kind (correct, total) on our own labelled fixtures (human replies live here)."""
    labels = json.loads((fixtures / "labels.json").read_text(encoding="utf-8"))
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for name, label in labels.items():
        result = classify_message((fixtures / name).read_bytes())
        total[label["kind"]] += 1
        correct[label["kind"]] += result.kind == label["kind"]
    return correct, total


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    paths = [a for a in argv[1:] if a != "-v"]
    corpus = Path(paths[0]) if paths else DEFAULT_CORPUS
    if not (corpus / "labels.json").is_file():
        print(f"no labelled corpus at {corpus}", file=sys.stderr)
        return 2
    print(f"$ python bench/classify_accuracy.py {corpus}")
    load = load_average()  # before this bench's own work: how busy the machine already was
    scores = score(corpus)
    total = sum(scores.kind_total.values())
    for kind in sorted(scores.kind_total):
        print(
            f"kind {kind:<11} {scores.kind_accuracy(kind):7.1%}"
            f"  ({scores.kind_correct[kind]}/{scores.kind_total[kind]})"
        )
    print(
        f"delay notices {scores.delays_flagged}/{scores.delay_notices} read as bounce"
        " with delayed=true (soft, halt nothing)"
    )
    print(
        f"bounce status {scores.status_accuracy:7.1%}  ({scores.status_correct}/"
        f"{scores.status_total})"
    )
    print(f"hard/soft     {scores.hard_accuracy:7.1%}  ({scores.hard_correct}/{scores.hard_total})")
    print(
        f"speed         {total / scores.seconds:7.0f} messages/s  ({total} messages), "
        f"{load_note(load)}"
    )
    lofo, left_out = score_leave_one_family_out(corpus)
    families = {family(name) for name in json.loads((corpus / "labels.json").read_text())}
    print(
        f"leave one family out ({len(families)} families; {left_out} phrases that only"
        " one family needed left out when scoring it):"
    )
    print(
        f"  bounce status {lofo.status_accuracy:7.1%}  ({lofo.status_correct}/{lofo.status_total})"
        f"   hard/soft {lofo.hard_accuracy:7.1%}  ({lofo.hard_correct}/{lofo.hard_total})"
        f"   kinds {sum(lofo.kind_correct.values())}/{sum(lofo.kind_total.values())}"
    )
    correct, fixture_total = score_fixtures()
    print(f"$ (fixtures) {FIXTURES.relative_to(REPO)}")
    for kind in sorted(fixture_total):
        print(
            f"kind {kind:<11} {correct[kind] / fixture_total[kind]:7.1%}"
            f"  ({correct[kind]}/{fixture_total[kind]})"
        )
    if verbose:
        print("\n".join(scores.misses))
        print("-- leave one family out:")
        print("\n".join(lofo.misses))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
