"""Active content found in a PDF, and the sentences that tell people about it.

The sandbox (`worker.documents.pdf_active`) walks a PDF's object graph and
reports what a PDF reader could act on by itself, as codes from `FINDINGS`.
Such a PDF is still shown: the viewer shows rendered images, so nothing in it
ever runs there. What a recipient may download is a copy without it (made and
checked in the sandbox); the document's page and the API say so in words,
with `download_note`.

A document's `active_content` column holds the codes found (a list, empty when
there were none); NULL means it has not been checked by this version yet.

Must never: name something that was not found, or promise a removal that did
not happen (`download_note` takes whether a checked copy exists).
"""

from __future__ import annotations

from collections.abc import Sequence

JAVASCRIPT = "javascript"
LAUNCH = "launch"
SUBMIT_FORM = "submit_form"
IMPORT_DATA = "import_data"
REMOTE_GOTO = "remote_goto"
OPEN_ACTION = "open_action"
ADDITIONAL_ACTIONS = "additional_actions"
EMBEDDED_FILE = "embedded_file"
FILE_ATTACHMENT = "file_attachment"
RICH_MEDIA = "rich_media"
XFA = "xfa"
UNCHECKED = "unchecked"

# In the order a sentence names them.
FINDINGS: dict[str, str] = {
    JAVASCRIPT: "JavaScript",
    LAUNCH: "an action that starts a program",
    SUBMIT_FORM: "a form that sends its contents to a web address",
    IMPORT_DATA: "an action that imports data from another file",
    REMOTE_GOTO: "links that open other files",
    OPEN_ACTION: "an action that runs when it is opened",
    ADDITIONAL_ACTIONS: "actions that run by themselves (when a page or field is used)",
    EMBEDDED_FILE: "an embedded file",
    FILE_ATTACHMENT: "a file attachment",
    RICH_MEDIA: "embedded media (video, sound, Flash or 3D)",
    XFA: "an XFA form",
    UNCHECKED: "more objects than Sightline checks",
}


def _listed(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def describe(findings: Sequence[str]) -> str:
    """The findings in words: "JavaScript and an embedded file"."""
    known = [code for code in FINDINGS if code in findings]
    return _listed([FINDINGS[code] for code in known])


def download_note(findings: Sequence[str] | None, kind: str, has_download: bool) -> str | None:
    """What to tell the sender about the download copy, or None when there is nothing to say.

    `findings` None means not checked yet; `kind` is the document's kind (pdf,
    docx, …); `has_download` whether a checked copy exists.
    """
    subject = "This PDF" if kind == "pdf" else "The PDF made from this file"
    if findings is None:
        return "The download copy is being prepared: downloads start once it is checked."
    if not findings:
        return None
    if UNCHECKED in findings:
        return (
            f"{subject} has more objects than Sightline checks for scripts and embedded "
            "files, so it is not offered for download. Recipients can still read it online."
        )
    what = describe(findings)
    if has_download:
        pronoun = "it was" if len([c for c in FINDINGS if c in findings]) == 1 else "they were"
        return f"{subject} contained {what}; {pronoun} removed from the download copy."
    return (
        f"{subject} contains {what}, which could not be removed, so it is not offered for "
        "download. Recipients can still read it online."
    )


def attachment_blob(
    kind: str, findings: Sequence[str] | None, download_blob: str | None
) -> str | None:
    """Which blob goes out when the document is sent as a plain attachment; None: it may not.

    The sender's own Office file goes as it is (its macro-enabled kinds are
    refused at upload); a PDF with active content goes only as the copy without
    it, so a PDF that can run code never leaves Sightline as a file.
    """
    if kind == "pdf" and findings:
        return download_blob
    return "original"
