"""Cutting an Office package's references to anything outside it, before LibreOffice opens it.

A DOCX or PPTX (OOXML) and an ODT or ODP (ODF) is a ZIP of XML parts, and it
may name files outside itself: a linked picture, slide background or shape
fill, a linked OLE object, a template, a sub-document, a linked section, a fill
bitmap, a DDE link, an INCLUDEPICTURE or INCLUDETEXT field. LibreOffice 7.4
loads some of those from the local disk while converting even with the
profile's settings (a PPTX background or shape fill, a PPTX OLE link to a text
file — shown as text —, an ODP picture, an ODF fill bitmap): another team's
page images, a key, another process's /proc/<pid>/environ drawn into the PDF.
Relative paths (``../../srv/documents/7/p1-1600.jpg``) resolve against the
document's folder, and ``file://`` URLs and plain absolute paths work alike.

`cut_links` writes a copy of the package in which every such reference points
nowhere (`NOWHERE`), wherever it stands:

    OOXML  a Relationship (any part, matched by its local name, as LibreOffice
           matches it) with TargetMode="External", or whose Target has a URL
           scheme ─▶ Target="about:invalid"
           w:instrText, w:fldSimple/@w:instr: a field INCLUDEPICTURE, INCLUDETEXT,
           INCLUDE, LINK, DDE, DDEAUTO, IMPORT, RD or DATABASE naming a local file
           ─▶ its instruction emptied (the field keeps its last result, as text)
    ODF    xlink:href that leaves the package (a URL scheme, an absolute path,
           ``..`` past its root) ─▶ about:invalid
    both   any attribute whose value is a ``file:`` or ``vnd.sun.star.`` URL (a
           form control's image, a script), and DDE's application, topic and
           item (dde-*, ddeService, ddeTopic) ─▶ emptied or about:invalid
           a part that is itself a ZIP package (an embedded DOCX or XLSX) ─▶
           the same, at most `MAX_DEPTH` packages deep (deeper is refused)
    kept   http, https and mailto URLs: hyperlinks stay links in the PDF, and the
           network is closed by LibreOffice's profile and the namespace
           (`worker.documents.convert`), so they are not this module's business

Every part that looks like XML is parsed (lxml: no DTD loaded, no entity
resolved, no network; deep trees and long texts allowed, as LibreOffice's
parser allows them) and written back only if something was cut; lxml keeps
namespace prefixes, which QName-valued attributes (mc:Ignorable, ODF formulas)
depend on. A part that is not well-formed (an HTML altChunk, Excel's VML) is
read leniently as far as it goes and kept as it is if nothing in it points
outside. Refused with `LinksError`, a sentence for the uploader: such a part
that does point outside (it cannot be rewritten faithfully), entity
declarations (no Office file has them; they could hide a value from this
check), two entries with the same name (which one would LibreOffice read?),
encrypted or damaged ZIP entries, more than `MAX_DEPTH` nested packages,
expansion past the budget. The copy is always written, so what LibreOffice
reads is exactly what was checked (no second ZIP directory, no entry seen
twice).

Not covered, and what holds for them: the binary Word 97 .doc and PowerPoint
97 .ppt, and OLE objects embedded as binary (oleObject1.bin) — no XML to
rewrite. LibreOffice's profile settings stopped every local reference tried
(linked pictures, fill bitmaps, backgrounds, INCLUDEPICTURE/INCLUDETEXT and
OLE links, written into .doc and .ppt by LibreOffice's own export), and the
private filesystem view (`isolation`) stops the rest where the platform allows
it. Formulas that name other files (an embedded spreadsheet's
``'file:///…'#$Sheet1.A1``) show their cached values: Calc never updates links.

Runs as a sandboxed child, started like `worker.documents.sandbox` (bare
environment, its own process group, isolated where possible, killed on its
deadline), never in the worker: parsing a hostile file happens where a crash or
an endless allocation is contained. A module of its own so that lxml (50-130
ms to import here) stays out of the page renderers:

    python -m worker.documents.links PACKAGE TARGET
        {"links": {"ok": true, "cut": {"relationship": n, ...}}}
        {"links": {"ok": false, "refused": true, "detail": <a sentence for the uploader>}}
        {"links": {"ok": false, "detail": ...}}       (anything else: not for the uploader)

Must never: import Sightline's settings or database.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import resource
import sys
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from lxml import etree

NOWHERE = "about:invalid"
KEPT_SCHEMES = frozenset({"http", "https", "mailto"})
LOCAL_PREFIXES = ("file:", "vnd.sun.star.")
FIELDS = frozenset(
    {
        "INCLUDEPICTURE",
        "INCLUDETEXT",
        "INCLUDE",
        "LINK",
        "DDE",
        "DDEAUTO",
        "IMPORT",
        "RD",
        "DATABASE",
    }
)
DDE_ATTRIBUTES = frozenset({"dde-application", "dde-topic", "dde-item", "ddeService", "ddeTopic"})
WORD = frozenset(
    {
        "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
        "http://purl.oclc.org/ooxml/wordprocessingml/main",
    }
)
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
MAX_DEPTH = 3
ADDRESS_SPACE_BYTES = 2 * 1024 * 1024 * 1024
MAX_ENTRIES = 10_000
MAX_TOTAL_BYTES = 300 * 1024 * 1024
ZIP_MAGIC = b"PK\x03\x04"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f]+")
_READ = 1024 * 1024
# A field's first argument: "quoted, with spaces" or a bare word.
_FIELD_ARGUMENT = re.compile(r'\s*(?:"([^"]*)"|(\S+))')


class LinksError(ValueError):
    """The package cannot be checked; the message says why, for the uploader."""


class _Budget:
    """Bytes and entries left to expand, across the package and every package inside it."""

    def __init__(self) -> None:
        self.bytes = MAX_TOTAL_BYTES

    def take(self, size: int) -> None:
        self.bytes -= size
        if self.bytes < 0:
            raise LinksError(f"it expands past {MAX_TOTAL_BYTES // (1024 * 1024)} MB when unpacked")


def _plain(value: str) -> str:
    """The value as a URL parser would read it: no spaces or controls, percent-decoded."""
    return unquote(_INVISIBLE.sub("", value))


def _scheme(value: str) -> str | None:
    match = _SCHEME.match(_plain(value))
    return match.group(1).lower() if match else None


def _local_url(value: str) -> bool:
    return _plain(value).lower().startswith(LOCAL_PREFIXES)


def _outside_package(href: str) -> bool:
    """True when an ODF reference leaves the package (ODF 1.3 part 3, 3.20: IRIs)."""
    plain = _plain(href).replace("\\", "/")
    if not plain or plain.startswith("#"):
        return False
    if _scheme(plain) is not None or plain.startswith("/"):
        return True
    return posixpath.normpath(plain).split("/", 1)[0] == ".."


def _network(value: str) -> bool:
    """An http, https or mailto URL: the profile and the namespace's business, not ours."""
    return _scheme(value) in KEPT_SCHEMES


def _cut_relationship(element: Any, cut: Counter[str]) -> None:
    target = element.get("Target")
    if target is None or _network(target):
        return
    external = (element.get("TargetMode") or "").strip().lower() == "external"
    if external or _scheme(target) is not None:
        element.set("Target", NOWHERE)
        cut["relationship"] += 1


def _cut_attributes(element: Any, cut: Counter[str]) -> None:
    href = element.get(XLINK_HREF)
    if href is not None and _outside_package(href) and not _network(href):
        element.set(XLINK_HREF, NOWHERE)
        cut["xlink"] += 1
    for name, value in element.attrib.items():
        local = etree.QName(name).localname
        if local in DDE_ATTRIBUTES and value:
            element.set(name, "")
            cut["dde"] += 1
        elif value != NOWHERE and _local_url(value):
            element.set(name, NOWHERE)
            cut["url"] += 1


def _includes_local_file(instruction: str) -> bool:
    """True for a field that includes a file (`FIELDS`), unless it names an http(s) URL."""
    words = instruction.split(maxsplit=1)
    if not words or words[0].upper() not in FIELDS:
        return False
    if words[0].upper() in ("LINK", "DDE", "DDEAUTO"):
        return True  # an application first, then the file
    argument = _FIELD_ARGUMENT.match(words[1] if len(words) > 1 else "")
    target = (argument.group(1) or argument.group(2)) if argument else ""
    return not _network(target)


def _cut_instruction(elements: list[Any], cut: Counter[str]) -> None:
    if _includes_local_file("".join(e.text or "" for e in elements)):
        for element in elements:
            element.text = ""
        cut["field"] += 1


def _cut_fields(root: Any, cut: Counter[str]) -> None:
    """Empty the instructions of fields that include other files (see the docstring).

    A field is ``fldChar begin``, instruction runs, ``separate``, result runs,
    ``end``; fields nest, and an instruction may be split over several runs.
    """
    open_fields: list[list[Any]] = []
    for element in root.iter():
        if isinstance(element.tag, str) and etree.QName(element).namespace in WORD:
            _field_step(element, open_fields, cut)
    for elements in open_fields:
        _cut_instruction(elements, cut)


def _field_step(element: Any, open_fields: list[list[Any]], cut: Counter[str]) -> None:
    """Follow one WordprocessingML element, in document order, through the open fields."""
    name = etree.QName(element)
    if name.localname == "fldChar":
        kind = element.get(f"{{{name.namespace}}}fldCharType")
        if kind == "begin":
            open_fields.append([])
        elif kind == "separate" and open_fields:
            _cut_instruction(open_fields[-1], cut)
            open_fields[-1] = []
        elif kind == "end" and open_fields:
            _cut_instruction(open_fields.pop(), cut)
    elif name.localname in ("instrText", "delInstrText"):
        if open_fields:
            open_fields[-1].append(element)
        else:
            _cut_instruction([element], cut)
    elif name.localname == "fldSimple":
        attribute = f"{{{name.namespace}}}instr"
        if _includes_local_file(element.get(attribute) or ""):
            element.set(attribute, "")
            cut["field"] += 1


def _looks_like_xml(data: bytes) -> bool:
    head = data[:4]
    if head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"<\x00", b"\x00<")):
        return True
    return data.lstrip(b" \t\r\n")[:1] == b"<"


def _parser(*, recover: bool) -> Any:
    # huge_tree: LibreOffice's parser accepts deep trees and long texts (XML_PARSE_HUGE);
    # a part this parser gave up on would reach LibreOffice unchecked.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=True,
        recover=recover,
        remove_blank_text=False,
    )


_STRICT = _parser(recover=False)
_LENIENT = _parser(recover=True)


def _cut_tree(root: Any, cut: Counter[str]) -> None:
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        if etree.QName(element).localname == "Relationship":
            _cut_relationship(element, cut)
        _cut_attributes(element, cut)
    _cut_fields(root, cut)


def _cut_xml(name: str, data: bytes, cut: Counter[str]) -> bytes:
    """The part with its outward references cut; `data` itself when nothing was cut.

    A part that is not well-formed is read leniently, as far as it goes (what a
    streaming parser would have acted on before the error): kept if nothing in
    it points outside, refused otherwise, since it cannot be rewritten faithfully.
    """
    try:
        root = etree.fromstring(data, _STRICT)
    except etree.XMLSyntaxError as exc:
        try:
            damaged = etree.fromstring(data, _LENIENT)
        except etree.XMLSyntaxError:
            return data  # nothing an XML parser can read
        found: Counter[str] = Counter()
        if damaged is not None:
            _cut_tree(damaged, found)
        if found:
            raise LinksError(
                f"its part {name} is not well-formed XML ({exc.msg}) and points outside the "
                "document"
            ) from None
        return data
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None and any(True for _ in docinfo.internalDTD.iterentities()):
        raise LinksError(f"its part {name} declares XML entities, which Office files never do")
    before = sum(cut.values())
    _cut_tree(root, cut)
    if sum(cut.values()) == before:
        return data
    rewritten: bytes = etree.tostring(
        root.getroottree(),
        xml_declaration=True,
        encoding=docinfo.encoding or "UTF-8",
        standalone=docinfo.standalone,
    )
    return rewritten


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> bytes:
    if info.flag_bits & 0x1:
        raise LinksError(f"its entry {info.filename} is encrypted")
    chunks = []
    try:
        with archive.open(info) as entry:
            while chunk := entry.read(_READ):
                budget.take(len(chunk))
                chunks.append(chunk)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error) as exc:
        raise LinksError(f"its entry {info.filename} cannot be read ({exc})") from None
    return b"".join(chunks)


def _entries(archive: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise LinksError(f"it holds more than {MAX_ENTRIES:,} files")
    seen: set[str] = set()
    for info in infos:
        key = info.filename.replace("\\", "/").lstrip("/").casefold()
        if key in seen:
            raise LinksError(f"it holds two entries named {info.filename}")
        seen.add(key)
        yield info


def _rewrite(
    source: IO[bytes], target: IO[bytes], depth: int, budget: _Budget, cut: Counter[str]
) -> None:
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, NotImplementedError) as exc:
        raise LinksError(f"a package in it is damaged ({exc})") from None
    with archive, zipfile.ZipFile(target, "w") as out:
        for info in _entries(archive):
            data = _read(archive, info, budget)
            if data.startswith(ZIP_MAGIC):
                if depth >= MAX_DEPTH:
                    raise LinksError(f"it nests documents more than {MAX_DEPTH} deep")
                inner = io.BytesIO()
                _rewrite(io.BytesIO(data), inner, depth + 1, budget, cut)
                data = inner.getvalue()
            elif not info.is_dir() and _looks_like_xml(data):
                data = _cut_xml(info.filename, data, cut)
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.external_attr = info.external_attr
            stored = info.compress_type == zipfile.ZIP_STORED
            copy.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            out.writestr(copy, data)


def cut_links(source: Path, target: Path) -> dict[str, int]:
    """Write `source` to `target` with every reference outside the package cut.

    Returns how many were cut, by kind (relationship, xlink, url, dde, field).

    Raises:
        LinksError: the package cannot be checked (see the module docstring).
    """
    cut: Counter[str] = Counter()
    with source.open("rb") as reading, target.open("wb") as writing:
        _rewrite(reading, writing, 1, _Budget(), cut)
    return dict(cut)


def main(argv: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BYTES, ADDRESS_SPACE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if len(argv) != 2:
        sys.stderr.write("usage: python -m worker.documents.links PACKAGE TARGET\n")
        return 2
    try:
        answer: dict[str, Any] = {"ok": True, "cut": cut_links(Path(argv[0]), Path(argv[1]))}
    except LinksError as exc:
        answer = {"ok": False, "refused": True, "detail": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which refuses the file
        answer = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"[:300]}
    sys.stdout.write(json.dumps({"links": answer}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
