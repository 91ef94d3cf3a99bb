"""Message-ID parsing on the header values real mailers write."""

from __future__ import annotations

import email
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.matching.msgid import (
    MAX_IDS,
    normalize_msgid,
    parse_msgid_list,
    reference_candidates,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc.123@Mail.Example.COM>", ["<abc.123@mail.example.com>"]),
        # The left part is case-sensitive.
        ("<ABC.def@example.com>", ["<ABC.def@example.com>"]),
        # Folded References (CRLF + whitespace), as Thunderbird writes long chains.
        (
            "<a1@example.com>\r\n <b2@example.com>\r\n\t<c3@example.com>",
            ["<a1@example.com>", "<b2@example.com>", "<c3@example.com>"],
        ),
        # Folding inside an id (seen from old Lotus Notes gateways).
        (
            "<OF1234.5678-ON\r\n 00001@notes.example.com>",
            ["<OF1234.5678-ON00001@notes.example.com>"],
        ),
        # Comments, nested, with brackets inside them that must not count.
        (
            "<a@x.org> (comment (nested <not@an.id>)) <b@x.org>",
            ["<a@x.org>", "<b@x.org>"],
        ),
        # Quoted local part, kept when it needs its quotes, unquoted when it does not.
        ('<"foo bar"@example.com>', ['<"foo bar"@example.com>']),
        ('<"abc.1"@example.com>', ["<abc.1@example.com>"]),
        ('<"a>b"@example.com>', ['<"a>b"@example.com>']),
        # Old-style In-Reply-To with a phrase around the id.
        (
            'Your message of "Mon, 3 Mar 2025 10:00:00 +0100" <CAF=xyz@mail.gmail.com>',
            ["<CAF=xyz@mail.gmail.com>"],
        ),
        # Garbage between ids, commas as separators.
        ("<a@x.org>, junk; <b@x.org>garbage", ["<a@x.org>", "<b@x.org>"]),
        # A lone id without brackets.
        ("abc.123@Example.COM", ["<abc.123@example.com>"]),
        ("  abc.123@example.com  ", ["<abc.123@example.com>"]),
        # Duplicates removed, first occurrence kept.
        ("<a@x.org> <b@x.org> <A@X.ORG> <a@X.org>", ["<a@x.org>", "<b@x.org>", "<A@x.org>"]),
        # RFC 2047 encoded junk around ids, and ids hidden in an encoded word.
        ("=?utf-8?q?R=C3=A9f=C3=A9rence?= <a@x.org>", ["<a@x.org>"]),
        ("=?utf-8?b?PGhpZGRlbkB4Lm9yZz4=?=", ["<hidden@x.org>"]),
        ("=?unknown-charset?q?zz?= <a@x.org>", ["<a@x.org>"]),
        # Not ids: no @, empty parts, empty, None.
        ("<no-at-sign>", []),
        ("<@x.org>", []),
        ("<a@>", []),
        ("", []),
        (None, []),
        ("   \r\n  ", []),
        # Unclosed bracket: what is there is still read.
        ("<a@x.org> <b@x.org", ["<a@x.org>", "<b@x.org>"]),
        # Bytes, including invalid UTF-8 inside an id (that id is dropped).
        (b"<a@x.org> <b\xff@x.org>", ["<a@x.org>"]),
        ("<日本@例え.jp>", ["<日本@例え.jp>"]),
    ],
)
def test_parse_msgid_list(value, expected):
    assert parse_msgid_list(value) == expected


def test_overlong_ids_are_dropped():
    long_id = "<" + "a" * 1000 + "@x.org>"
    assert parse_msgid_list(f"<ok@x.org> {long_id}") == ["<ok@x.org>"]


def test_long_chains_keep_the_newest_ids():
    ids = [f"<m{i}@x.org>" for i in range(250)]
    parsed = parse_msgid_list("\r\n ".join(ids))
    assert len(parsed) == MAX_IDS
    assert parsed == ids[-MAX_IDS:]


def test_huge_input_does_not_hang():
    parse_msgid_list("(" * 100_000 + "<a@x.org>")
    parse_msgid_list('"' * 100_000)
    # Escaped quotes inside a bracket, none closing: each must not rescan the rest.
    assert parse_msgid_list('<"' + '\\"' * 100_000 + " <a@x.org>")[-1] == "<a@x.org>"
    assert parse_msgid_list("<a@x.org> " + "junk " * 100_000) == ["<a@x.org>"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<abc@X.org>", "<abc@x.org>"),
        ("abc@X.org", "<abc@x.org>"),
        (" <abc@x.org> (sent by us)", "<abc@x.org>"),
        ("not an id", None),
        ("<a@x.org> <b@x.org>", None),
        ("", None),
    ],
)
def test_normalize_msgid(value, expected):
    assert normalize_msgid(value) == expected


def _message(headers: str):
    raw = headers.replace("\n", "\r\n") + "\r\n\r\nbody\r\n"
    return email.message_from_bytes(raw.encode(), policy=email.policy.default)


def test_reference_candidates_order():
    msg = _message(
        "From: a@x.org\nIn-Reply-To: <c@x.org>\nReferences: <a@x.org> <b@x.org>\n <c@x.org>"
    )
    assert reference_candidates(msg) == ["<c@x.org>", "<b@x.org>", "<a@x.org>"]


def test_reference_candidates_without_in_reply_to_and_with_compat32():
    raw = b"From: a@x.org\r\nReferences: <a@x.org> <b@X.org>\r\n\r\nbody\r\n"
    msg = email.message_from_bytes(raw)
    assert reference_candidates(msg) == ["<b@x.org>", "<a@x.org>"]


def test_reference_candidates_none():
    assert reference_candidates(_message("From: a@x.org\nSubject: hi")) == []


_CANONICAL = r"<[^\s<>@]+@[^\s<>@A-Z]+>"


@settings(max_examples=400)
@given(st.one_of(st.text(), st.binary(), st.none()))
def test_parse_never_raises_and_is_canonical(value):
    ids = parse_msgid_list(value)
    assert len(ids) <= MAX_IDS
    assert len(set(ids)) == len(ids)
    for msgid in ids:
        assert msgid.startswith("<") and msgid.endswith(">")
        assert len(msgid) <= 998
        left, _, domain = msgid[1:-1].rpartition("@")
        assert left and domain == domain.lower()


_atom = st.text(alphabet="abcXYZ019.-_=+$", min_size=1, max_size=12).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
)
_ids = st.builds(lambda a, d: f"<{a}@{d}>", _atom, _atom)
_noise = st.sampled_from([" ", "\r\n ", ", ", " (a (b) c) ", " junk ", "\t"])


@settings(max_examples=300)
@given(st.lists(st.tuples(_ids, _noise), max_size=20))
def test_parse_finds_every_generated_id_and_is_idempotent(pairs):
    value = "".join(i + n for i, n in pairs)
    ids = parse_msgid_list(value)
    expected = list(dict.fromkeys(normalize_msgid(i) for i, _ in pairs))
    assert ids == expected
    assert parse_msgid_list(" ".join(ids)) == ids
    for msgid in ids:
        assert normalize_msgid(msgid) == msgid
