"""An Office package's references to local files are cut; everything else comes out as it went in.

`worker.documents.links` is what keeps local files out of a conversion where
no private filesystem view can be made (a Heroku dyno). These tests build
small packages by hand, run `cut_links` on them and read the copy back: each
way a reference can be spelled is cut, hyperlinks and the package's own parts
are kept, and what cannot be checked is refused with a sentence. The real
files, converted by the real LibreOffice, are in
tests/security/test_office_local_files.py.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from lxml import etree

from worker.documents import links
from worker.documents.links import NOWHERE, LinksError, cut_links

PKG = "http://schemas.openxmlformats.org/package/2006/relationships"
R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
ODF = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:form="urn:oasis:names:tc:opendocument:xmlns:form:1.0" '
    'xmlns:xlink="http://www.w3.org/1999/xlink"'
)


def package(parts: Mapping[str, bytes | str], *, odf: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        if odf:
            archive.writestr(
                "mimetype", "application/vnd.oasis.opendocument.text", zipfile.ZIP_STORED
            )
        for name, data in parts.items():
            archive.writestr(name, data)
    return out.getvalue()


def cut(tmp_path: Path, data: bytes) -> tuple[dict[str, int], zipfile.ZipFile]:
    source = tmp_path / "in.zip"
    target = tmp_path / "out.zip"
    source.write_bytes(data)
    counts = cut_links(source, target)
    return counts, zipfile.ZipFile(target)


def relationships(*items: tuple[str, str, str | None]) -> str:
    body = "".join(
        f'<Relationship Id="{rid}" Type="{R}/image" Target="{target}"'
        + (f' TargetMode="{mode}"' if mode else "")
        + "/>"
        for rid, target, mode in items
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{PKG}">{body}</Relationships>'
    )


def targets(archive: zipfile.ZipFile, name: str) -> list[str]:
    root = etree.fromstring(archive.read(name))
    return [element.get("Target") for element in root]


LOCAL_TARGETS = [
    "/srv/documents/7/p1-1600.jpg",
    "file:///srv/documents/7/p1-1600.jpg",
    "FILE:///etc/passwd",
    " file:///etc/passwd",
    "fi%6Ce:///etc/passwd",
    "../../../../srv/documents/7/p1-1600.jpg",
    "p1-1600.jpg",
    "\\\\fileserver\\share\\secret.png",
    "C:\\secrets\\key.png",
    "smb://fileserver/share/secret.png",
    "vnd.sun.star.pkg://file:%2F%2F%2Ftmp%2Fother.zip/secret.png",
]


def test_every_spelling_of_an_external_target_is_cut(tmp_path: Path) -> None:
    items = [(f"rId{n}", target, "External") for n, target in enumerate(LOCAL_TARGETS)]
    counts, out = cut(tmp_path, package({"word/_rels/document.xml.rels": relationships(*items)}))
    assert targets(out, "word/_rels/document.xml.rels") == [NOWHERE] * len(LOCAL_TARGETS)
    assert counts == {"relationship": len(LOCAL_TARGETS)}


def test_hyperlinks_and_the_packages_own_parts_are_kept(tmp_path: Path) -> None:
    kept = [
        ("rIdWeb", "https://example.com/pricing", "External"),
        ("rIdPlain", "http://example.com/", "External"),
        ("rIdMail", "mailto:dana@acme.test", "External"),
        ("rIdMedia", "media/image1.png", None),
        ("rIdUp", "../media/image2.png", None),
        ("rIdAbsolute", "/word/document.xml", None),
    ]
    data = package({"word/_rels/document.xml.rels": relationships(*kept)})
    counts, out = cut(tmp_path, data)
    assert counts == {}
    assert targets(out, "word/_rels/document.xml.rels") == [target for _r, target, _m in kept]
    # Nothing cut: the part is byte for byte what was uploaded.
    assert out.read("word/_rels/document.xml.rels") == relationships(*kept).encode()


def test_an_internal_target_that_is_a_url_or_says_external_in_any_case_is_cut(
    tmp_path: Path,
) -> None:
    items = [
        ("rId1", "file:///etc/passwd", None),
        ("rId2", "/etc/passwd", "external"),
        ("rId3", "/etc/passwd", " EXTERNAL "),
    ]
    _counts, out = cut(
        tmp_path, package({"ppt/slides/_rels/slide1.xml.rels": relationships(*items)})
    )
    assert targets(out, "ppt/slides/_rels/slide1.xml.rels") == [NOWHERE] * 3


def test_a_relationships_part_without_namespace_or_in_utf16_is_read_too(tmp_path: Path) -> None:
    bare = (
        '<Relationships><Relationship Id="rId1" Type="x" Target="/etc/passwd" '
        'TargetMode="External"/></Relationships>'
    )
    utf16 = relationships(("rId1", "file:///etc/passwd", "External")).replace(
        'encoding="UTF-8"', 'encoding="UTF-16"'
    )
    data = package({"a/_rels/x.xml.rels": bare, "b/_rels/y.xml.rels": utf16.encode("utf-16")})
    counts, out = cut(tmp_path, data)
    assert counts == {"relationship": 2}
    assert targets(out, "a/_rels/x.xml.rels") == [NOWHERE]
    assert targets(out, "b/_rels/y.xml.rels") == [NOWHERE]


def field(*instructions: str) -> str:
    runs = "".join(f"<w:r><w:instrText>{text}</w:instrText></w:r>" for text in instructions)
    return (
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        + runs
        + '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>shown</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )


def test_fields_that_include_files_lose_their_instruction_and_others_keep_theirs(
    tmp_path: Path,
) -> None:
    body = (
        field(' INCLUDEPICTURE "/srv/documents/7/p1-1600.jpg" \\d ')
        + field(" INCLUDE", 'TEXT "file:///etc/passwd" ')  # split over two runs
        + field(" includetext ", '"/etc/passwd"')
        + field(" LINK Word.Document.12 ", '"/etc/passwd" "" \\a ')
        + field(" DDEAUTO soffice /etc/passwd ")
        + field(' HYPERLINK "https://example.com/" ')
        + field(' INCLUDEPICTURE "https://example.com/logo.png" \\d ')  # the network's business
        + field(" PAGE ")
        + '<w:fldSimple w:instr=" INCLUDEPICTURE &quot;/etc/x.png&quot; "/>'
    )
    document = f'<w:document xmlns:w="{W}"><w:body>{body}</w:body></w:document>'
    counts, out = cut(tmp_path, package({"word/document.xml": document}))
    assert counts == {"field": 6}
    text = out.read("word/document.xml").decode()
    assert "/etc/" not in text and "/srv/" not in text
    assert "HYPERLINK" in text and "PAGE" in text and "example.com/logo.png" in text
    assert text.count("shown") == 8  # results stay, as text


def test_a_field_nested_in_another_is_followed(tmp_path: Path) -> None:
    inner = field(" MERGEFIELD path ")
    body = (
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        "<w:r><w:instrText> INCLUDEPICTURE </w:instrText></w:r>"
        f"{inner}"
        '<w:r><w:instrText> "/etc/x.png" </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )
    document = f'<w:document xmlns:w="{W}"><w:body>{body}</w:body></w:document>'
    counts, out = cut(tmp_path, package({"word/document.xml": document}))
    assert counts == {"field": 1}
    assert "/etc/x.png" not in out.read("word/document.xml").decode()
    assert "MERGEFIELD" in out.read("word/document.xml").decode()


def odf_content(body: str) -> str:
    return (
        f"<office:document-content {ODF}><office:body><office:text>{body}"
        "</office:text></office:body></office:document-content>"
    )


def test_odf_references_that_leave_the_package_are_cut_and_its_own_parts_kept(
    tmp_path: Path,
) -> None:
    leaving = [
        "/srv/documents/7/p1-1600.jpg",
        "file:///etc/passwd",
        "../../../../../srv/documents/7/p1-1600.jpg",
        "Pictures/../../secret.png",
        "%2e%2e/%2e%2e/secret.png",
        "..\\..\\secret.png",
        "\\\\fileserver\\share\\x.png",
        "vnd.sun.star.expand:$BRAND_BASE_DIR/secret.png",
    ]
    inside = [
        "Pictures/1000.png",
        "./Object 1",
        "Object 2",
        "#Slide 2",
        "https://example.com/a.png",
    ]
    images = "".join(
        f'<text:p><draw:frame><draw:image xlink:href="{href}"/></draw:frame></text:p>'
        for href in (*leaving, *inside)
    )
    hyperlinks = (
        '<text:p><text:a xlink:href="https://example.com/">site</text:a>'
        '<text:a xlink:href="file:///etc/passwd">file</text:a></text:p>'
    )
    data = package({"content.xml": odf_content(images + hyperlinks)}, odf=True)
    counts, out = cut(tmp_path, data)
    root = etree.fromstring(out.read("content.xml"))
    hrefs = [
        e.get("{http://www.w3.org/1999/xlink}href")
        for e in root.iter()
        if e.get("{http://www.w3.org/1999/xlink}href")
    ]
    assert hrefs == [NOWHERE] * len(leaving) + inside + ["https://example.com/", NOWHERE]
    assert counts == {"xlink": len(leaving) + 1}


def test_other_attributes_naming_local_files_and_dde_links_are_cut(tmp_path: Path) -> None:
    body = (
        '<text:p><form:button form:image-data="file:///srv/documents/7/p1-1600.jpg"/></text:p>'
        '<text:dde-connection-decls><text:dde-connection-decl office:name="L" '
        'office:dde-application="soffice" office:dde-topic="/etc/passwd" office:dde-item="1"/>'
        "</text:dde-connection-decls>"
    )
    counts, out = cut(tmp_path, package({"content.xml": odf_content(body)}, odf=True))
    assert counts == {"url": 1, "dde": 3}
    text = out.read("content.xml").decode()
    assert "/etc/passwd" not in text and "p1-1600" not in text


def test_the_copy_keeps_every_entry_in_order_and_each_prefix_as_it_was(tmp_path: Path) -> None:
    document = (
        f'<w:document xmlns:w="{W}" xmlns:r="{R}" '
        'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
        'xmlns:w14="http://schemas.microsoft.com/office/word/2010/wordml" mc:Ignorable="w14">'
        f"<w:body>{field(' INCLUDETEXT /etc/passwd ')}</w:body></w:document>"
    )
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    data = package(
        {"content.xml": odf_content(""), "word/document.xml": document, "Pictures/a.png": picture},
        odf=True,
    )
    _counts, out = cut(tmp_path, data)
    assert out.namelist() == ["mimetype", "content.xml", "word/document.xml", "Pictures/a.png"]
    assert out.getinfo("mimetype").compress_type == zipfile.ZIP_STORED
    assert out.read("Pictures/a.png") == picture
    assert out.read("content.xml") == odf_content("").encode()
    rewritten = out.read("word/document.xml").decode()
    # mc:Ignorable names the prefix w14: it must still be declared under that name.
    assert 'xmlns:w14="http://schemas.microsoft.com/office/word/2010/wordml"' in rewritten
    assert 'mc:Ignorable="w14"' in rewritten


def test_a_package_inside_the_package_is_cut_too_and_too_deep_is_refused(tmp_path: Path) -> None:
    rels = relationships(("rId1", "/etc/passwd", "External"))
    inner = package({"word/_rels/document.xml.rels": rels})
    middle = package({"word/embeddings/inner.docx": inner})
    counts, out = cut(tmp_path, package({"word/embeddings/middle.docx": middle}))
    assert counts == {"relationship": 1}
    nested = zipfile.ZipFile(io.BytesIO(out.read("word/embeddings/middle.docx")))
    innermost = zipfile.ZipFile(io.BytesIO(nested.read("word/embeddings/inner.docx")))
    assert targets(innermost, "word/_rels/document.xml.rels") == [NOWHERE]

    too_deep = package({"x.docx": package({"y.docx": package({"z.docx": inner})})})
    with pytest.raises(LinksError, match="nests documents more than 3 deep"):
        cut(tmp_path, too_deep)


@pytest.mark.parametrize(
    ("parts", "refusal"),
    [
        (
            {
                "content.xml": '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "file:///etc/passwd">]>'
                f'<office:document-content {ODF}><draw:image xlink:href="&e;"/>'
                "</office:document-content>"
            },
            "declares XML entities",
        ),
        (
            {"content.xml": f'<office:document-content {ODF}><draw:image xlink:href="file:///x"/>'},
            "is not well-formed XML .* and points outside the document",
        ),
    ],
)
def test_what_cannot_be_checked_is_refused_with_a_sentence(
    tmp_path: Path, parts: dict[str, str], refusal: str
) -> None:
    with pytest.raises(LinksError, match=refusal):
        cut(tmp_path, package(parts, odf=True))


def test_two_entries_with_one_name_are_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("content.xml", odf_content(""))
        archive.writestr("Content.XML", odf_content('<draw:image xlink:href="/etc/passwd"/>'))
    with pytest.raises(LinksError, match="two entries named"):
        cut(tmp_path, out.getvalue())


def test_a_part_that_is_not_xml_or_not_well_formed_but_harmless_is_kept_as_it_is(
    tmp_path: Path,
) -> None:
    html = b"<html><body><p>chunk<br><img src=picture.png></body></html>"
    vml = b"<xml xmlns:v='urn:schemas-microsoft-com:vml'><v:shape><br></v:shape>"
    data = package({"word/chunk.html": html, "xl/drawings/vmlDrawing1.vml": vml})
    counts, out = cut(tmp_path, data)
    assert counts == {}
    assert out.read("word/chunk.html") == html
    assert out.read("xl/drawings/vmlDrawing1.vml") == vml


def test_expansion_past_the_budget_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(links, "MAX_TOTAL_BYTES", 64 * 1024)
    data = package({"word/media/big.bin": bytes(100 * 1024)})
    with pytest.raises(LinksError, match="expands past"):
        cut(tmp_path, data)


def test_a_damaged_package_is_refused(tmp_path: Path) -> None:
    data = package({"content.xml": odf_content("")}, odf=True)
    with pytest.raises(LinksError, match="damaged"):
        cut(tmp_path, data[: len(data) // 2])
