"""Fuzzing the classify command line: every file gets its one JSON line, whatever it holds.

`python -m worker.matching classify FILE...` (its stable contract): one
JSON object per file, in order, with the same keys; unreadable paths still get
a line; exit status 0. Here `main()` runs in-process on generated messages,
random bytes and paths that cannot be read, mixed in one call.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz.mail import messages, reports
from tests.fuzz.profiles import fuzz
from worker.matching.__main__ import main

KEYS = {"path", "kind", "refers_to", "bounce", "auto_reply", "text"}
contents = st.one_of(messages(), reports(), st.binary(max_size=2000), st.none())


# Found by the long run: a reply's text holding a line or paragraph separator (or
# NEL) came out raw, and a reader splitting the output into lines got too many.
_SEPARATORS = (
    "From: Dana <dana@acme.test>\r\nSubject: Re: Hi\r\nIn-Reply-To: <s.1@seller.test>\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n\r\nYes\u2028Tuesday\u2029works\u0085ok\r\n"
).encode()


@fuzz(60)
@given(st.lists(contents, min_size=1, max_size=6))
@example([_SEPARATORS, None])
def test_one_json_line_per_file_in_order(
    capsys: pytest.CaptureFixture[str], files: list[bytes | None]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths: list[str] = []
        for n, content in enumerate(files):
            path = Path(folder) / (f"m{n}.eml" if content is not None else f"missing-{n}.eml")
            if content is not None:  # a missing file is an unreadable path
                path.write_bytes(content)
            paths.append(str(path))
        capsys.readouterr()
        assert main(["classify", *paths]) == 0
        out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == len(paths)
    for name, line in zip(paths, lines, strict=True):
        result = json.loads(line)
        assert set(result) == KEYS
        assert result["path"] == name
        assert result["kind"] in ("reply", "auto_reply", "bounce", "complaint", "other")
