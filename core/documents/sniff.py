"""What a file is, decided by its content — never by its name or declared type.

`sniff(source, filename)` returns a `FileType` for the kinds we accept:

    %PDF- in the first 1 KiB .................................... pdf
    ZIP with [Content_Types].xml naming a Word main part ......... docx
                                    ... a PowerPoint main part ... pptx
    ZIP whose `mimetype` entry is OpenDocument text ............. odt
                                   ... OpenDocument presentation . odp
    OLE2 compound file with a `WordDocument` stream .............. doc
                          ... a `PowerPoint Document` stream ..... ppt

and raises `UnsupportedFileError` with a sentence a person can act on for
anything else: a macro-enabled Office file, a password-protected one (OLE2
`EncryptedPackage`), a spreadsheet, an image, a program, plain text, …

Only directories and a few small entries are read here (sizes capped), so this
is safe on the web request path. Whether a ZIP expands to something enormous is
checked by the worker before conversion (`worker.documents.safety`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from typing import IO

import olefile

PDF_MAGIC = b"%PDF-"
ZIP_MAGIC = b"PK\x03\x04"
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ACCEPTED = "Upload a PDF, Word (DOC, DOCX, ODT) or PowerPoint (PPT, PPTX, ODP) file."
_SMALL_ENTRY = 1024 * 1024


class UnsupportedFileError(ValueError):
    """The file is not a kind we accept; the message says what it is and what to do."""


@dataclass(frozen=True)
class FileType:
    kind: str  # pdf, docx, pptx, odt, odp, doc, ppt
    content_type: str
    label: str

    @property
    def office(self) -> bool:
        """True when LibreOffice must turn it into a PDF first."""
        return self.kind != "pdf"

    @property
    def zipped(self) -> bool:
        return self.kind in ("docx", "pptx", "odt", "odp")


TYPES = {
    "pdf": FileType("pdf", "application/pdf", "PDF"),
    "docx": FileType(
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "Word document",
    ),
    "pptx": FileType(
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "PowerPoint presentation",
    ),
    "odt": FileType("odt", "application/vnd.oasis.opendocument.text", "OpenDocument text"),
    "odp": FileType(
        "odp", "application/vnd.oasis.opendocument.presentation", "OpenDocument presentation"
    ),
    "doc": FileType("doc", "application/msword", "Word 97-2003 document"),
    "ppt": FileType("ppt", "application/vnd.ms-powerpoint", "PowerPoint 97-2003 presentation"),
}

# Main-part content types in [Content_Types].xml (templates and shows count too).
_OOXML_MAIN = {
    "wordprocessingml.document.main+xml": "docx",
    "wordprocessingml.template.main+xml": "docx",
    "presentationml.presentation.main+xml": "pptx",
    "presentationml.slideshow.main+xml": "pptx",
    "presentationml.template.main+xml": "pptx",
}
_ODF = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.text-template": "odt",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/vnd.oasis.opendocument.presentation-template": "odp",
}
_OTHER_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"{\\rtf", "an RTF document"),
    (b"\x7fELF", "a program (ELF)"),
    (b"MZ", "a Windows program"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf", "a 7-Zip archive"),
]


def _unsupported(filename: str, what: str) -> UnsupportedFileError:
    return UnsupportedFileError(
        f"{filename} is {what}, not a document Sightline can show. {ACCEPTED}"
    )


def _read_entry(archive: zipfile.ZipFile, name: str) -> bytes:
    with archive.open(name) as entry:
        return entry.read(_SMALL_ENTRY)


def _sniff_zip(source: IO[bytes], filename: str) -> FileType:
    try:
        with zipfile.ZipFile(source) as archive:
            names = set(archive.namelist())
            if "mimetype" in names:
                mimetype = _read_entry(archive, "mimetype").decode("ascii", "replace").strip()
                if mimetype in _ODF:
                    return TYPES[_ODF[mimetype]]
                if "spreadsheet" in mimetype:
                    raise _unsupported(filename, "an OpenDocument spreadsheet")
                raise _unsupported(filename, f"an OpenDocument file of another kind ({mimetype})")
            if "[Content_Types].xml" in names:
                types = _read_entry(archive, "[Content_Types].xml").decode("utf-8", "replace")
                if "macroEnabled" in types:
                    raise UnsupportedFileError(
                        f"{filename} is a macro-enabled Office file. Sightline does not send "
                        "files that can run code: save it as .docx or .pptx and upload that."
                    )
                for marker, kind in _OOXML_MAIN.items():
                    if marker in types:
                        return TYPES[kind]
                if "spreadsheetml" in types:
                    raise _unsupported(filename, "an Excel workbook")
                raise _unsupported(filename, "an Office file of another kind")
    except zipfile.BadZipFile as exc:
        raise UnsupportedFileError(
            f"{filename} looks like an Office file but is damaged ({exc}). {ACCEPTED}"
        ) from None
    raise _unsupported(filename, "a ZIP archive")


def _sniff_ole(source: IO[bytes], filename: str) -> FileType:
    try:
        ole = olefile.OleFileIO(source)
    except OSError as exc:
        raise UnsupportedFileError(
            f"{filename} looks like an older Office file but is damaged ({exc}). {ACCEPTED}"
        ) from None
    with ole:
        if ole.exists("EncryptedPackage"):
            raise UnsupportedFileError(
                f"{filename} is password-protected. Remove the password (or save an "
                "unprotected copy) and upload that."
            )
        if ole.exists("WordDocument"):
            return TYPES["doc"]
        if ole.exists("PowerPoint Document"):
            return TYPES["ppt"]
        if ole.exists("Workbook") or ole.exists("Book"):
            raise _unsupported(filename, "an Excel 97-2003 workbook")
    raise _unsupported(filename, "an older Office file of another kind")


def _describe(head: bytes) -> str:
    for magic, what in _OTHER_MAGIC:
        if head.startswith(magic):
            return what
    lowered = head[:512].lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "a web page (HTML)"
    if not head:
        return "empty"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "plain text"
    return "a file of an unknown kind"


def sniff(source: IO[bytes], filename: str) -> FileType:
    """The file's type from its content. `source` must be seekable; it is rewound.

    Raises:
        UnsupportedFileError: not a kind we accept (the message says what it is).
    """
    source.seek(0)
    head = source.read(1024)
    source.seek(0)
    try:
        if PDF_MAGIC in head:
            return TYPES["pdf"]
        if head.startswith(ZIP_MAGIC):
            return _sniff_zip(source, filename)
        if head.startswith(OLE_MAGIC):
            return _sniff_ole(source, filename)
    finally:
        source.seek(0)
    raise _unsupported(filename, _describe(head))
