"""The Gmail client's fast `iri2uri` answers exactly what httplib2's own does.

`worker.sync.gmail_api.ascii_iri2uri` replaces httplib2's per-character pass for
ASCII URIs (16 % of a Gmail push sync's CPU); it must be the same function, only
faster: compared here with httplib2's on the URIs the Gmail client sends, on odd
ASCII ones, on generated ones, and on IRIs that need escaping.
"""

from __future__ import annotations

import importlib

import httplib2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.sync.gmail_api import ascii_iri2uri

HTTPLIB2_IRI2URI = importlib.import_module("httplib2.iri2uri").iri2uri

URIS = [
    "https://gmail.googleapis.com/gmail/v1/users/me/history?startHistoryId=1234"
    "&historyTypes=messageAdded&labelId=INBOX&maxResults=500&alt=json",
    "https://127.0.0.1:8443/gmail/v1/users/me/messages/18c2f?format=metadata"
    "&metadataHeaders=From&metadataHeaders=Message-ID&metadataHeaders=In-Reply-To&alt=json",
    "HTTPS://Example.COM:443/Path/%7Euser/?q=a+b&x=%20#Frag",
    "http://user:pw@host/a/b?",
    "http://[::1]:8080/x#",
    "https://host/a b\r\nX: y",
    "relative/path?x=1",
    "",
]
IRIS = ["https://bücher.example/straße?q=é", "https://host/\u00a0\ud7ff/\U0001f600?x=ü#ä"]


@pytest.mark.parametrize("uri", URIS + IRIS)
def test_the_same_answer_as_httplib2(uri: str) -> None:
    assert ascii_iri2uri(uri) == HTTPLIB2_IRI2URI(uri)


def test_bytes_pass_through_as_in_httplib2() -> None:
    assert ascii_iri2uri(b"https://host/x") == HTTPLIB2_IRI2URI(b"https://host/x")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=80))
def test_generated_ascii_uris_get_the_same_answer_or_error(text: str) -> None:
    for uri in (text, f"https://{text}", f"https://host/{text}"):
        try:
            expected: object = HTTPLIB2_IRI2URI(uri)
        except ValueError as exc:  # urlsplit on a bad [IPv6], IDNA on a bad label
            expected = type(exc)
        try:
            got: object = ascii_iri2uri(uri)
        except ValueError as exc:  # urlsplit on a bad [IPv6], IDNA on a bad label
            got = type(exc)
        assert got == expected, uri


def test_httplib2_requests_go_through_it() -> None:
    assert httplib2.iri2uri is ascii_iri2uri  # httplib2.Http.request's lookup
