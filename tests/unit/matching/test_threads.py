"""Subjects compared as people read them: reply and forward markers in many languages gone."""

from __future__ import annotations

import pytest

from worker.matching.threads import normalize_subject


@pytest.mark.parametrize(
    ("subject", "normalised"),
    [
        ("Quick question", "quick question"),
        ("Re: Quick question", "quick question"),
        ("RE:  quick   QUESTION ", "quick question"),
        ("AW: Re[2]: Fwd: Quick question", "quick question"),
        ("SV: VS: Antw: Odp: Quick question", "quick question"),
        ("Réf : TR: Quick question", "quick question"),
        ("R: Rif: Quick question", "quick question"),
        ("\u56de\u590d\uff1aQuick question", "quick question"),  # 回复 and a full-width colon
        ("ΑΠ: Quick question", "quick question"),
        ("[EXTERNAL] Re: Quick question", "quick question"),
        ("Re(3): Quick question", "quick question"),
        ("Research: Quick question", "research: quick question"),  # a word, not a marker
        ("Reply needed", "reply needed"),
        ("", ""),
        (None, ""),
    ],
)
def test_markers_whitespace_and_case_do_not_count(subject: str | None, normalised: str) -> None:
    assert normalize_subject(subject) == normalised
