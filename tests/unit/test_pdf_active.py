"""Active content in PDFs: each kind is found by walking the object graph, and removed.

The sandbox's own functions (`worker.documents.pdf_active`) on PDFs built with
PyMuPDF the way real producers write them (tests/fixtures/documents/active.py),
plain and with every object in compressed object streams. The removed copy is
saved, opened afresh and walked again, as the sandbox does before offering it.
"""

from __future__ import annotations

from pathlib import Path

import pymupdf
import pytest

from core.documents.findings import FINDINGS, describe, download_note
from tests.fixtures.documents import active, samples
from worker.documents.pdf_active import find_active_content, remove_active_content


def texts(doc: pymupdf.Document) -> list[str]:
    return [str(page.get_text()) for page in doc.pages()]


def found_in(data: bytes) -> list[str]:
    with pymupdf.open(stream=data, filetype="pdf") as doc:
        return find_active_content(doc)


def removed(data: bytes, folder: Path) -> tuple[list[str], pymupdf.Document]:
    target = folder / "copy.pdf"
    with pymupdf.open(stream=data, filetype="pdf") as doc:
        remove_active_content(doc, str(target))
    copy = pymupdf.open(str(target))
    return find_active_content(copy), copy


@pytest.mark.parametrize("objstm", [False, True], ids=["plain", "object-streams"])
@pytest.mark.parametrize("feature", list(active.FEATURES))
def test_each_kind_of_active_content_is_found_and_removed(
    feature: str, objstm: bool, tmp_path: Path
) -> None:
    data = active.with_feature(feature, objstm=objstm)
    expected = [code for code in FINDINGS if code in active.FEATURES[feature][1]]
    assert found_in(data) == expected
    left, copy = removed(data, tmp_path)
    with copy:
        assert left == []
        assert copy.page_count == 2
        assert copy.embfile_count() == 0
        kinds = {annot.type[1] for page in copy.pages() for annot in page.annots()}
        assert not kinds & {"FileAttachment", "RichMedia"}, kinds
        with pymupdf.open(stream=data, filetype="pdf") as original:
            assert texts(copy) == texts(original)


def test_object_streams_hide_nothing_a_byte_search_would_need(tmp_path: Path) -> None:
    data = active.everything(objstm=True)
    assert b"/ObjStm" in data and b"/Launch" not in data  # compressed out of sight
    assert found_in(data) == [code for code in FINDINGS if code != "unchecked"]
    left, copy = removed(data, tmp_path)
    with copy:
        assert left == []
        catalog = copy.pdf_catalog()
        assert copy.xref_get_key(catalog, "OpenAction")[0] == "null"
        assert copy.xref_get_key(catalog, "Names/JavaScript")[0] == "null"
        assert copy.xref_get_key(catalog, "AcroForm/XFA")[0] == "null"
        assert copy.xref_get_key(copy[0].xref, "AA")[0] == "null"


def test_names_inside_strings_and_a_plain_open_destination_are_not_active() -> None:
    assert found_in(active.decoy()) == []
    assert found_in(active.goto_export()) == []
    assert found_in(samples.pdf_bytes(3)) == []


def test_content_nothing_knows_to_cut_is_still_found_in_the_copy(tmp_path: Path) -> None:
    data = active.hidden_embedded_file()
    assert found_in(data) == ["embedded_file"]
    left, copy = removed(data, tmp_path)
    copy.close()
    assert left == ["embedded_file"]  # the sandbox refuses such a copy: no download


def test_the_sentences_say_what_was_found_and_what_happened() -> None:
    assert describe(["embedded_file", "javascript"]) == "JavaScript and an embedded file"
    assert download_note(["javascript", "embedded_file"], "pdf", True) == (
        "This PDF contained JavaScript and an embedded file; they were removed from the "
        "download copy."
    )
    assert download_note(["launch"], "docx", True) == (
        "The PDF made from this file contained an action that starts a program; it was "
        "removed from the download copy."
    )
    assert download_note(["embedded_file"], "pdf", False) == (
        "This PDF contains an embedded file, which could not be removed, so it is not "
        "offered for download. Recipients can still read it online."
    )
    assert download_note([], "pdf", True) is None
    assert download_note(None, "pdf", False) is not None
