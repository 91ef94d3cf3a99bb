"""How hard the property tests (fuzzing) in this folder push: `fuzz(n)` settings.

- `ci` (the default, what `make test` runs): `n` examples per property,
  derandomized so a run is reproducible, no deadline.
- `long` (`HYPOTHESIS_PROFILE=long`, `make fuzz`): up to 40 times `n` fresh
  random examples per property, the fuzzing run documented in SECURITY.md,
  bounded by time too: the properties share `FUZZ_BUDGET_SECONDS` (default
  2,100 s) and each stops when its share is spent (tests/fuzz/conftest.py),
  printing how many examples it ran:

      HYPOTHESIS_PROFILE=long python -m pytest tests/fuzz -p no:cacheprovider -q

The profiles are applied per test (`@fuzz(n)`), never loaded globally, so the
rest of the suite keeps its own Hypothesis settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG_FACTOR = 40
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)


def fuzz(examples: int) -> settings:
    """Settings for a property: `examples` in CI, `LONG_FACTOR` times as many in the long run."""
    profile = PROFILE if PROFILE in ("ci", "long") else "ci"
    factor = LONG_FACTOR if profile == "long" else 1
    return settings(settings.get_profile(profile), max_examples=examples * factor)
