"""FETCH answers read by meaning: every spelling real servers send, and those RFC 3501 allows.

The fixtures (tests/fixtures/imap/, see its README) are untagged responses byte
for byte. Each is read the way the provider reads a socket: imaplib's response
reader, then imapclient's FETCH parser, then `worker.sync.imap_fetch`.
"""

from __future__ import annotations

import imaplib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from imapclient.exceptions import ProtocolError
from imapclient.response_parser import parse_fetch_response

from worker.sync.imap import HEADER_NAMES
from worker.sync.imap_fetch import (
    answers_request,
    find_header_block,
    find_message,
    header_fields_request,
    parse_item,
)
from worker.sync.mime import summarize_headers

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imap"
CAPTURED = sorted(p.name for p in FIXTURES.glob("*.headers.imap") if not p.name.startswith("rfc"))
READABLE = [
    "rfc3501-lowercase-quoted-origin.headers.imap",
    "rfc3501-subset.headers.imap",
    "rfc3501-unsolicited-flags.headers.imap",
    "rfc3501-whole-header.headers.imap",
]


def read_wire(name: str) -> dict[int, dict[bytes, object]]:
    """The file's responses as imapclient's `fetch()` returns them (UID → items)."""
    wire = (FIXTURES / name).read_bytes()
    # imaplib's own reader on the bytes, as it reads them from a socket: literals,
    # continuation lines, untagged responses collected by type.
    reader: Any = imaplib.IMAP4.__new__(imaplib.IMAP4)
    reader.debug = 0
    reader.untagged_responses = {}
    reader.tagged_commands = {}
    reader.continuation_response = ""
    reader._cmd_log_len, reader._cmd_log_idx, reader._cmd_log = 10, 0, {}
    reader._mode_ascii()  # the response patterns
    reader.tagre = re.compile(rb"(?P<tag>T\d+) (?P<type>[A-Z]+) (?P<data>.*)", re.ASCII)
    reader.file = io.BytesIO(wire)
    while reader.file.tell() < len(wire):
        reader._get_response()
    data = reader.untagged_responses.get("FETCH", [])
    parsed: dict[int, dict[bytes, object]] = parse_fetch_response(
        data, normalise_times=False, uid_is_key=True
    )
    return parsed


def test_every_captured_server_is_there() -> None:
    assert {name.split("-")[0] for name in CAPTURED} == {"courier", "dovecot", "mailutils"}


@pytest.mark.parametrize("name", CAPTURED + READABLE)
def test_the_headers_are_read_whatever_the_spelling(name: str) -> None:
    answer = read_wire(name)[1]
    assert answers_request(answer)
    block = find_header_block(answer, HEADER_NAMES)
    assert block is not None, f"{name}: no header block among {list(answer)}"
    summary = summarize_headers(block, "fallback")
    assert summary.rfc_message_id == "<reply.1@acme.test>"
    assert summary.candidates == ["<step.1@seller.test>", "<older@acme.test>"]
    assert summary.from_addr == "dana@acme.test"
    assert summary.subject == "Re: Hello Dana"


@pytest.mark.parametrize("name", ["rfc3501-empty-quoted.headers.imap", "rfc3501-nil.headers.imap"])
def test_a_message_with_none_of_the_fields_has_an_empty_header(name: str) -> None:
    answer = read_wire(name)[1]
    assert find_header_block(answer, HEADER_NAMES) == b""
    assert summarize_headers(b"", "seed").candidates == []


def test_an_answer_without_headers_is_not_taken_for_an_empty_header() -> None:
    answer = read_wire("rfc3501-no-headers.headers.imap")[1]
    assert answers_request(answer)  # it answered: SIZE and INTERNALDATE
    assert find_header_block(answer, HEADER_NAMES) is None  # the provider raises on this


def test_unsolicited_flags_are_not_an_answer() -> None:
    parsed = read_wire("rfc3501-unsolicited-flags.headers.imap")
    assert not answers_request(parsed[2])  # FLAGS for another message only


def test_a_field_name_sent_as_a_literal_is_refused_by_the_parser_not_misread() -> None:
    # imapclient cannot read a literal inside a section: the provider turns this
    # ProtocolError into a permanent sync error instead of "no candidates".
    with pytest.raises(ProtocolError):
        read_wire("rfc3501-literal-field-name.headers.imap")


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.body.imap")))
def test_the_whole_message_is_found_under_any_spelling(name: str) -> None:
    body = find_message(read_wire(name)[1])
    assert body is not None and b"Yes, happy to talk on Tuesday." in body


@pytest.mark.parametrize(
    ("key", "name", "section", "fields", "origin"),
    [
        (b"RFC822.SIZE", "RFC822.SIZE", None, set(), None),
        (b"BODY[]", "BODY", "", set(), None),
        (b"BODY[]<0>", "BODY", "", set(), 0),
        (b"BODY.PEEK[HEADER]", "BODY", "HEADER", set(), None),
        (b'BODY[HEADER.FIELDS ("Message-ID" in-reply-to)]', "BODY", "HEADER.FIELDS",
         {"MESSAGE-ID", "IN-REPLY-TO"}, None),
        (b'body[header.fields ("a\\"b" C)]<12>', "BODY", "HEADER.FIELDS", {'A"B', "C"}, 12),
        (b"BODY[HEADER.FIELDS.NOT (X-SPAM)]", "BODY", "HEADER.FIELDS.NOT", {"X-SPAM"}, None),
    ],
)  # fmt: skip
def test_item_names_are_parsed_by_meaning(
    key: bytes, name: str, section: str | None, fields: set[str], origin: int | None
) -> None:
    item = parse_item(key)
    assert item is not None
    assert (item.name, item.section, set(item.fields), item.origin) == (
        name,
        section,
        fields,
        origin,
    )


@pytest.mark.parametrize(
    "key", [b"BODY[HEADER.FIELDS (A", b'BODY[HEADER.FIELDS ("A)]', b"BODY[]<x>", b"BODY]["]
)
def test_malformed_item_names_are_not_guessed(key: bytes) -> None:
    assert parse_item(key) is None


def test_the_request_names_every_field_once() -> None:
    item = parse_item(header_fields_request(HEADER_NAMES))
    assert item is not None and item.fields == frozenset(HEADER_NAMES)


def test_a_huge_hostile_item_name_is_parsed_in_linear_time() -> None:
    hostile = b"BODY[HEADER.FIELDS (" + b'"\\\\' * 200_000 + b'")]'
    assert parse_item(hostile) is not None  # one pass: no backtracking, no blow-up
