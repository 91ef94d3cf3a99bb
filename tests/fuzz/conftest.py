"""The long fuzzing run (HYPOTHESIS_PROFILE=long): bounded by time as well as examples.

Hypothesis stops a property after `max_examples`; it has no time limit. The long
run asks 40 times the CI examples, and a property that drives the whole sync
per example never got through them: `make fuzz` did not end. So in the long
profile each property here runs in batches of fresh random examples until it
has run its examples or spent its share of `FUZZ_BUDGET_SECONDS` (default
2,100 s), whichever comes first:

- a property's share is what is left of the budget over the properties left, so
  time a quick property did not need goes to the ones after it;
- the first batch is small (at most `FIRST_BATCH`, the CI count if less); the
  next ones are sized from the time per example measured so far, to end within
  the share. (Each batch starts with Hypothesis' simplest examples again: a few
  repeats, the price of a clock Hypothesis does not have.)
- a batch that runs fewer examples than it asked means Hypothesis exhausted
  what the strategy can draw: the property stops there.

Nothing is skipped silently: the end of the run prints, per property, how many
examples passed, how many were asked, and the seconds spent (`fuzz: ...` lines),
and a property stopped by the clock says so. A failing example fails the
property at once, as in any Hypothesis run.

The long run is not bound by the suite's per-test timeout either: pytest.ini's
300 s guards the CI-sized run against a hang, and the long run's own clock is
the budget above.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.fuzz.profiles import LONG_FACTOR, PROFILE

HERE = Path(__file__).parent
BUDGET_SECONDS = float(os.environ.get("FUZZ_BUDGET_SECONDS", "2100"))
FIRST_BATCH = 20


@dataclass
class Ran:
    nodeid: str
    passed: int
    asked: int
    seconds: float
    stopped_by: str  # "examples", "clock", "exhausted"


@dataclass
class Budget:
    seconds: float
    properties_left: int = 0
    started: float | None = None
    runs: list[Ran] = field(default_factory=list)

    def share(self) -> float:
        """This property's seconds: what is left of the budget, over the properties left."""
        now = time.monotonic()
        if self.started is None:
            self.started = now
        left = self.seconds - (now - self.started)
        return max(0.0, left) / max(1, self.properties_left)


BUDGET = Budget(BUDGET_SECONDS)


def _is_property(item: pytest.Item) -> bool:
    return HERE in item.path.parents and bool(
        getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE != "long":
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(0))


def pytest_collection_finish(session: pytest.Session) -> None:
    """The budget is shared by the properties that will run (after -k and deselection)."""
    BUDGET.properties_left = sum(1 for item in session.items if _is_property(item))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run a property in timed batches (long profile only); pytest runs everything else."""
    if PROFILE != "long" or not _is_property(pyfuncitem):
        return None
    arguments = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    share = BUDGET.share()
    try:
        BUDGET.runs.append(run_in_batches(pyfuncitem.nodeid, pyfuncitem.obj, arguments, share))
    finally:
        BUDGET.properties_left -= 1
    return True


def run_in_batches(nodeid: str, test: Any, arguments: dict[str, Any], seconds: float) -> Ran:
    """Call the @given `test` with batches of examples until it ran them all or `seconds` passed."""
    base: settings = test._hypothesis_internal_use_settings
    asked = base.max_examples
    inner: Callable[..., Any] = test.hypothesis.inner_test
    passed = 0

    @functools.wraps(inner)  # a failure is reported under the property's own name
    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal passed
        result = inner(*args, **kwargs)
        passed += 1
        return result

    started = time.monotonic()
    deadline = started + seconds
    batch = max(1, min(FIRST_BATCH, asked // LONG_FACTOR))
    stopped_by = "examples"
    test.hypothesis.inner_test = counted
    try:
        while passed < asked:
            want = min(batch, asked - passed)
            test._hypothesis_internal_use_settings = settings(base, max_examples=want)
            before, batch_started = passed, time.monotonic()
            test(**arguments)
            ran = passed - before
            if ran < want:
                stopped_by = "exhausted"
                break
            if passed >= asked:
                break
            per_example = (time.monotonic() - batch_started) / ran
            left = deadline - time.monotonic()
            if left < per_example:
                stopped_by = "clock"
                break
            # Later examples are often larger and slower: aim short of the share.
            batch = max(1, int(0.7 * left / per_example))
    finally:
        test.hypothesis.inner_test = inner
        test._hypothesis_internal_use_settings = base
    return Ran(nodeid, passed, asked, time.monotonic() - started, stopped_by)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if PROFILE != "long" or not BUDGET.runs:
        return
    write = terminalreporter.write_line
    spent = sum(r.seconds for r in BUDGET.runs)
    write(f"fuzz: {len(BUDGET.runs)} properties in {spent:.0f} s (budget {BUDGET.seconds:.0f} s)")
    for run in BUDGET.runs:
        note = {"examples": "", "clock": ", stopped by the clock", "exhausted": ", exhausted"}
        write(
            f"fuzz: {run.nodeid}: {run.passed}/{run.asked} examples in {run.seconds:.0f} s"
            f"{note[run.stopped_by]}"
        )
