"""Every pattern applied to inbound mail or to a tracking hit runs in linear time.

A safety property, not a benchmark. Each compiled pattern found in the modules
that read mail or hits (module globals, and tuples/lists/dicts of them) is run
over a family of adversarial inputs at two sizes, n and 8n characters: runs of
blank lines, spaces and tabs, mixed line endings, ``>`` quote chains, ``-``/``=``/
``_`` rulers, ``<``/``@``/``>`` runs, long tokens, digits and dots, and each of
those after a keyword taken from the pattern itself (so that a pattern's
expensive part, behind its literal, is reached).

Linear work grows about 8 times from n to 8n; quadratic 64 times, cubic 512. A
pattern is reported when its time at 8n is over 8^1.5 ≈ 23 times its time at n
(the geometric middle of linear and quadratic: a margin of 2.8 either way) *and*
over ``FLOOR_SECONDS`` (below that, timer noise decides), confirmed by a second,
best-of-five measurement. Times are the thread's CPU time, which another process
on a loaded machine does not inflate, and the two sizes are timed in turn, so
what a loaded machine still adds (a shared core's caches) weighs on both alike.
(At n and 4n with a limit of 10, a margin of 1.6 for quadratic, a control below
once measured under 10 in a loaded full run.)

Run on the code before it, the checker reported ``replytext.REPLY_PREFIX``,
``_SEPARATOR``, ``_HEADER_FROM`` and ``_HEADER_OTHER``, ``bounce._MESSAGE_ID_LINE``,
``_FROM_LINE`` and ``_TO_LINE``, ``autoreply._JAPANESE``, ``msgid._BARE_ID`` and
``reasons._COMMAND`` (each grew 16 times from n to 4n), and ``bounce._ORIGINAL_MARKER`` took
88 s on 1,500 blank lines (cubic). ``test_the_checker_*`` keep the checker honest
on patterns of those shapes.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from collections.abc import Iterator
from types import ModuleType

import pytest
from crawlerdetect.crawlerdetect import get_compiled_crawler_regex, get_compiled_exclusions_regex

import core.tracking
import web.tracking
import worker.matching
from core.tracking.hits import MAX_USER_AGENT

SMALL = 500
LARGE = 8 * SMALL
FLOOR_SECONDS = 0.002

# Modules whose patterns see mail or tracking input, besides the packages below.
EXTRA_MODULES = [
    "worker.sync.headers",
    "worker.sync.mime",
    "worker.sync.inbound",
    "worker.events",
    "web.documents.visits",
    "worker.sync.sent_mail",
    "worker.sync.gmail_sent",
]
PACKAGES = [worker.matching, core.tracking, web.tracking]

UNITS = [
    "\n", "\r\n", " \n", " \t\r\n", "\r", " ", "\t", "\u00a0",
    ">", "> ", ">\n", "> \n", "-", "=", "_", "*", "-\n", "= \n",
    "<", "@", "<@>", "<a@b> ", "a", "a@", "a.", "a-", "ab ", "1", "1.", "1 ",
    "5.1.1 ", "550-", "(", '"', "=?a?q?", "<a ", "<!--", ":", "a: \n", "\n ", ";",
]  # fmt: skip


def _modules() -> Iterator[ModuleType]:
    for name in EXTRA_MODULES:
        yield importlib.import_module(name)
    for package in PACKAGES:
        for info in pkgutil.iter_modules(package.__path__):
            if info.name != "__main__":
                yield importlib.import_module(f"{package.__name__}.{info.name}")


def _patterns_in(value: object) -> Iterator[re.Pattern[str]]:
    if isinstance(value, re.Pattern):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _patterns_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _patterns_in(item)


def collect_patterns() -> dict[str, re.Pattern[str]]:
    """Every compiled str pattern held by the modules that read mail or hits."""
    found: dict[str, re.Pattern[str]] = {}
    seen: set[int] = set()  # a pattern imported elsewhere is checked once
    for module in _modules():
        for name, value in vars(module).items():
            if isinstance(value, ModuleType | type):
                continue
            for index, pattern in enumerate(_patterns_in(value)):
                if isinstance(pattern.pattern, str) and id(pattern) not in seen:
                    seen.add(id(pattern))
                    found[f"{module.__name__}.{name}[{index}]"] = pattern
    return found


def _keywords(pattern: re.Pattern[str]) -> list[str]:
    """A few literal words of the pattern, so inputs reach what follows them."""
    words = list(dict.fromkeys(re.findall(r"[a-z]{3,}", pattern.pattern.lower())))
    return [w for w in (words[:2] + words[-1:]) if w not in ("apos", "quot")][:3]


# After a keyword, what a pattern's next quantifier may run over.
FILLERS = ["\n", " \n", " ", "\t", "\n ", "-", "=", "a", "1", "<", ">", ":"]


def _inputs(pattern: re.Pattern[str], size: int) -> Iterator[tuple[str, str]]:
    families = [("", UNITS)] + [
        (prefix, FILLERS) for prefix in [*(f"{w} " for w in _keywords(pattern)), "message-id:"]
    ]
    for prefix, units in families:
        for unit in units:
            yield f"{prefix}|{unit!r}", prefix + unit * max(1, (size - len(prefix)) // len(unit))


def _seconds(pattern: re.Pattern[str], text: str) -> float:
    start = time.thread_time()
    for _match in pattern.finditer(text):
        pass
    return time.thread_time() - start


def _superlinear(pattern: re.Pattern[str], small: str, large: str, runs: int) -> float | None:
    """The growth factor from ``small`` to ``large`` if it is not linear, else None.

    Best of ``runs`` for each, timed in turn; the limit is the geometric middle
    of linear and quadratic growth for the two inputs' sizes.
    """
    t_small = t_large = float("inf")
    for _ in range(runs):
        t_small = min(t_small, _seconds(pattern, small))
        t_large = min(t_large, _seconds(pattern, large))
    limit = (len(large) / len(small)) ** 1.5
    if t_large > FLOOR_SECONDS and t_large > limit * max(t_small, 1e-6):
        return t_large / max(t_small, 1e-6)
    return None


def nonlinear_inputs(pattern: re.Pattern[str], scale: int = 1) -> list[str]:
    """Descriptions of the family's inputs on which ``pattern`` grows faster than linearly."""
    found: list[str] = []
    smalls = dict(_inputs(pattern, SMALL * scale))
    for label, large in _inputs(pattern, LARGE * scale):
        small = smalls[label]
        if _superlinear(pattern, small, large, 1) and (
            growth := _superlinear(pattern, small, large, 5)
        ):
            found.append(f"{label} grew {growth:.0f}x")
            break  # one input is proof enough; spare the rest of the family
    return found


PATTERNS = collect_patterns()


def test_the_patterns_are_found() -> None:
    # The collector must see the patterns it exists for (a rename would hide them).
    names = set(PATTERNS)
    for expected in (
        "worker.matching.bounce_text._ORIGINAL_MARKER[0]",
        "worker.matching.replytext._SEPARATOR[0]",
        "worker.matching.msgid._BARE_ID[0]",
        "worker.matching.reasons._COMPILED[0]",
        "worker.matching.htmltext._CLASS_OR_ID[0]",
    ):
        assert expected in names
    assert len(PATTERNS) >= 60


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_runs_in_linear_time(name: str) -> None:
    assert nonlinear_inputs(PATTERNS[name]) == []


@pytest.mark.parametrize(
    "pattern",
    [get_compiled_crawler_regex(), get_compiled_exclusions_regex()],
    ids=["crawlers", "exclusions"],
)
def test_crawler_patterns_run_in_linear_time_on_user_agents(pattern: re.Pattern[str]) -> None:
    # crawlerdetect's ~1,500-name alternations label every hit; the user agent is
    # capped at MAX_USER_AGENT characters before they see it.
    long_agents = [
        ("Mozilla/5.0 (" + unit) * (MAX_USER_AGENT // 14) for unit in ("a", " ", "(", ";")
    ]
    for agent in long_agents:
        small, large = agent[: MAX_USER_AGENT // 8], agent[:MAX_USER_AGENT]
        assert _superlinear(pattern, small, large, 3) is None


@pytest.mark.parametrize(
    ("pattern", "where"),
    [
        (re.compile(r"^\s*x", re.MULTILINE), "blank lines"),  # what FIELD-NOTES warns about
        (re.compile(r"[^\s@]+@x"), "a long token"),  # the old msgid._BARE_ID shape
        (re.compile(r"^[ \t]*(?:-*)[ \t]*x", re.MULTILINE), "spaces"),  # adjacent quantifiers
    ],
)
def test_the_checker_catches_superlinear_patterns(pattern: re.Pattern[str], where: str) -> None:
    assert nonlinear_inputs(pattern), where


def test_the_checker_passes_their_linear_rewrites() -> None:
    for pattern in (
        re.compile(r"^[ \t]*+x", re.MULTILINE),
        re.compile(r"(?<![^\s@])[^\s@]++@x"),
        re.compile(r"^[ \t]*+(?:-++[ \t]*+)?x", re.MULTILINE),
    ):
        assert nonlinear_inputs(pattern) == [], pattern.pattern
