"""The EWS stream's envelopes are found however the server cuts its chunks.

`worker.sync.exchange_stream.envelopes` reads a GetStreamingEvents response a
chunk at a time (exchangelib reads it a byte at a time): every envelope must come
out whole, once, as soon as its end tag is in, whether a chunk holds a piece of
one, exactly one, or several, and whatever the SOAP prefix.
"""

from __future__ import annotations

from collections.abc import Iterator

from worker.sync.exchange_stream import envelopes

FRAME = (
    b'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="x"><s:Body>'
    b"<m:ConnectionStatus>{n}</m:ConnectionStatus></s:Body></s:Envelope>"
)


def frames(count: int) -> list[bytes]:
    return [FRAME.replace(b"{n}", str(n).encode()) for n in range(count)]


def bodies(found: list[bytes]) -> list[bytes]:
    return [d[d.index(b"<s:Envelope") :] for d in found]


def expected(count: int) -> list[bytes]:
    return [f[f.index(b"<s:Envelope") :] for f in frames(count)]


def test_every_cut_gives_the_same_envelopes() -> None:
    stream = b"".join(frames(3))
    for size in (1, 2, 7, 13, 64, len(stream)):
        chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
        assert bodies(list(envelopes(chunks))) == expected(3), size


def test_an_envelope_comes_out_when_its_end_tag_arrives_not_later() -> None:
    first, second = frames(2)
    seen: list[bytes] = []

    def chunks() -> Iterator[bytes]:
        yield first
        assert len(seen) == 1  # read before the next chunk was asked for
        yield second[:30]

    for document in envelopes(chunks()):
        seen.append(document)
    assert bodies(seen) == expected(1)  # the cut-off second one is never handed out


def test_any_prefix_or_none() -> None:
    plain = b"<Envelope><Body>1</Body></Envelope>"
    soap = b"<soap:Envelope a='1'><soap:Body/></soap:Envelope >"
    found = list(envelopes([plain + soap]))
    assert [d.split(b"\n", 1)[1] for d in found] == [plain, soap]
