"""Active content in a PDF: finding it by walking the object graph, and removing it.

Runs in the sandbox child only (`worker.documents.sandbox`), on a PDF MuPDF has
opened; MuPDF's own object API (``pymupdf.mupdf``) does the reading, so objects
inside compressed object streams are seen like any other, and a string that
merely contains ``/JavaScript`` is a string, not a name.

    trailer ─▶ every object reachable from it (each indirect object once; a
               budget of `MAX_NODES` objects, past which the file is "unchecked")
        a dict with ...                                   is reported as
        /JS, or a /JavaScript name tree                   javascript
        /S /Launch | /SubmitForm | /ImportData            launch | submit_form | import_data
        /S /GoToR | /GoToE                                remote_goto
        /S /RichMediaExecute | /Rendition | /Movie | /Sound,
           /RichMediaContent, /3DD, a Sound or Movie annotation's media   rich_media
        /OpenAction that is an action (not a plain GoTo) open_action
        /AA (page, annotation, field, catalog)            additional_actions
        /EmbeddedFiles, /EF, /Type /EmbeddedFile          embedded_file
        /Subtype /FileAttachment with its /FS             file_attachment
        /XFA                                              xfa

URI links and plain GoTo actions are left alone: a link a reader has to click,
to a web address shown on hover, is what a downloaded brochure is expected to
have.

Removing (`remove_active_content`): PyMuPDF's `Document.scrub` first (its
JavaScript, embedded-file and attached-file parts only: nothing that changes
what a page shows), then the same walk deletes /AA, /XFA, /EmbeddedFiles,
/JavaScript name trees, /EF and media payloads, empties every dangerous action
and drops the keys (/A, /OpenAction) that point at one, and takes attachment and
media annotations out of /Annots. Saving with garbage collection drops what is
no longer reachable. The caller re-reads the saved copy with `find_active_content`:
only a copy with no findings is ever offered.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from core.documents import findings as f

MAX_NODES = 2_000_000

ACTIONS = {
    "JavaScript": f.JAVASCRIPT,
    "Launch": f.LAUNCH,
    "SubmitForm": f.SUBMIT_FORM,
    "ImportData": f.IMPORT_DATA,
    "GoToR": f.REMOTE_GOTO,
    "GoToE": f.REMOTE_GOTO,
    "RichMediaExecute": f.RICH_MEDIA,
    "Rendition": f.RICH_MEDIA,
    "Movie": f.RICH_MEDIA,
    "Sound": f.RICH_MEDIA,
}
# Annotations that carry a file or media: taken out of the page entirely.
CARRIERS = {"FileAttachment", "RichMedia", "Screen", "Movie", "Sound", "3D"}
# Keys whose value is removed wherever they appear.
PAYLOAD_KEYS = ("AA", "XFA", "EmbeddedFiles", "JavaScript", "EF", "RichMediaContent", "3DD")


class TooLargeToCheckError(Exception):
    """The PDF has more objects than `MAX_NODES`: it was not fully walked."""


def _mupdf() -> Any:
    # Imported here, in the sandbox child, after `sandbox._pymupdf` has imported
    # PyMuPDF the cheap way; the worker process never loads it.
    return importlib.import_module("pymupdf.mupdf")


def _entries(m: Any, obj: Any) -> dict[str, Any]:
    """A dict object's entries by key name."""
    return {
        m.pdf_to_name(m.pdf_dict_get_key(obj, i)): m.pdf_dict_get_val(obj, i)
        for i in range(m.pdf_dict_len(obj))
    }


def _name(m: Any, obj: Any | None) -> str:
    return str(m.pdf_to_name(obj)) if obj is not None and m.pdf_is_name(obj) else ""


def _walk(document: Any, visit: Callable[[Any, Any, dict[str, Any]], None]) -> None:
    """Call `visit(mupdf, dict, entries)` once for every dict reachable from the trailer."""
    pymupdf = importlib.import_module("pymupdf")
    m = _mupdf()
    pdf = pymupdf._as_pdf_document(document)  # PyMuPDF's own accessor
    seen: set[int] = set()
    stack = [m.pdf_trailer(pdf)]
    nodes = 0
    while stack:
        obj = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise TooLargeToCheckError(f"more than {MAX_NODES:,} objects")
        if m.pdf_is_indirect(obj):
            number = m.pdf_to_num(obj)
            if number in seen:
                continue
            seen.add(number)
            obj = m.pdf_resolve_indirect(obj)
        if m.pdf_is_dict(obj):
            entries = _entries(m, obj)
            visit(m, obj, entries)
            children = list(entries.values())
        elif m.pdf_is_array(obj):
            children = [m.pdf_array_get(obj, i) for i in range(m.pdf_array_len(obj))]
        else:
            continue
        stack.extend(
            child
            for child in children
            if m.pdf_is_indirect(child) or m.pdf_is_dict(child) or m.pdf_is_array(child)
        )


def _is_dangerous_action(m: Any, entries: dict[str, Any]) -> bool:
    return "JS" in entries or _name(m, entries.get("S")) in ACTIONS


def _runs_on_open(m: Any, target: Any) -> bool:
    """True unless an /OpenAction is a destination or a plain GoTo (what most exports set)."""
    if not m.pdf_is_dict(target):
        return False
    entries = _entries(m, m.pdf_resolve_indirect(target))
    return _name(m, entries.get("S")) != "GoTo" or "Next" in entries


def _found_in(m: Any, entries: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    action = _name(m, entries.get("S"))
    if action in ACTIONS:
        found.add(ACTIONS[action])
    if "JS" in entries or "JavaScript" in entries:
        found.add(f.JAVASCRIPT)
    if "AA" in entries and m.pdf_dict_len(entries["AA"]) > 0:
        found.add(f.ADDITIONAL_ACTIONS)
    if "OpenAction" in entries and _runs_on_open(m, entries["OpenAction"]):
        found.add(f.OPEN_ACTION)
    if "XFA" in entries:
        found.add(f.XFA)
    if (
        "EmbeddedFiles" in entries
        or "EF" in entries
        or _name(m, entries.get("Type")) in ("EmbeddedFile",)
    ):
        found.add(f.EMBEDDED_FILE)
    subtype = _name(m, entries.get("Subtype"))
    if subtype == "FileAttachment" and "FS" in entries:
        found.add(f.FILE_ATTACHMENT)
    if (
        "RichMediaContent" in entries
        or "3DD" in entries
        or (subtype == "Sound" and "Sound" in entries)
        or (subtype == "Movie" and "Movie" in entries)
    ):
        found.add(f.RICH_MEDIA)
    return found


def find_active_content(document: Any) -> list[str]:
    """The codes (`core.documents.findings`) for what the PDF holds, in their fixed order."""
    found: set[str] = set()
    try:
        _walk(document, lambda m, _obj, entries: found.update(_found_in(m, entries)))
    except TooLargeToCheckError:
        found.add(f.UNCHECKED)
    return [code for code in f.FINDINGS if code in found]


def _drop_pointers(m: Any, obj: Any, entries: dict[str, Any]) -> None:
    """Delete /A, /PA and /OpenAction when they point at a dangerous (or emptied) action."""
    for key in ("A", "PA"):
        target = entries.get(key)
        if target is not None and m.pdf_is_dict(target):
            action = _entries(m, m.pdf_resolve_indirect(target))
            if not action or _is_dangerous_action(m, action):
                m.pdf_dict_dels(obj, key)
    if "OpenAction" in entries and _runs_on_open(m, entries["OpenAction"]):
        m.pdf_dict_dels(obj, "OpenAction")


def _drop_carriers(m: Any, annots: Any) -> None:
    """Take annotations that carry a file or media out of a page's /Annots array."""
    annots = m.pdf_resolve_indirect(annots)
    for index in reversed(range(m.pdf_array_len(annots))):
        annot = m.pdf_array_get(annots, index)
        if m.pdf_is_dict(annot):
            kind = _name(m, m.pdf_dict_gets(m.pdf_resolve_indirect(annot), "Subtype"))
            if kind in CARRIERS:
                m.pdf_array_delete(annots, index)


def _clean(m: Any, obj: Any, entries: dict[str, Any]) -> None:
    """Make one dict inert (see the module docstring); `entries` are its entries before."""
    if _is_dangerous_action(m, entries):
        for key in entries:  # an empty dict is no action at all
            m.pdf_dict_dels(obj, key)
        return
    payload = [key for key in PAYLOAD_KEYS if key in entries]
    if "S" in entries and "Next" in entries:
        payload.append("Next")
    subtype = _name(m, entries.get("Subtype"))
    if subtype == "FileAttachment" and "FS" in entries:
        payload.append("FS")
    elif subtype in ("Sound", "Movie") and subtype in entries:
        payload.append(subtype)
    for key in payload:
        m.pdf_dict_dels(obj, key)
    _drop_pointers(m, obj, entries)
    annots = entries.get("Annots")
    if annots is not None and m.pdf_is_array(annots):
        _drop_carriers(m, annots)


def _scrub_with_pymupdf(document: Any) -> str:
    """PyMuPDF's own scrub, limited to what never changes how a page looks. '' or the error."""
    try:
        document.scrub(
            attached_files=True,
            embedded_files=True,
            javascript=True,
            clean_pages=False,
            hidden_text=False,
            metadata=False,
            redactions=False,
            remove_links=False,
            reset_fields=False,
            reset_responses=False,
            thumbnails=False,
            xml_metadata=False,
        )
    except Exception as exc:  # noqa: BLE001 - our own pass below still runs; the check decides
        return f"{type(exc).__name__}: {exc}"[:300]
    return ""


def remove_active_content(document: Any, target: str) -> str:
    """Write a copy of `document` without active content to `target`.

    Returns PyMuPDF's scrub error ('' when it had none), for the log only: the
    caller decides by re-reading `target` with `find_active_content`.

    Raises:
        TooLargeToCheckError: the object graph is larger than `MAX_NODES`.
    """
    scrub_error = _scrub_with_pymupdf(document)
    _walk(document, _clean)
    # garbage=2: unreachable objects (the files and scripts cut loose above) are dropped.
    document.save(target, garbage=2, deflate=True)
    return scrub_error
