"""The long fuzzing run (HYPOTHESIS_PROFILE=long) is not bound by the suite's per-test timeout.

pytest.ini's 300 s guards the CI-sized run against a hang; the long run draws 40
times the examples and is expected to take longer per test, so a property would
otherwise "fail" as a timeout half-way through its examples.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.profiles import PROFILE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if PROFILE != "long":
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.timeout(0))
