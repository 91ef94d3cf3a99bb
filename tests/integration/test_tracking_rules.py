"""Tracking tokens, send-time rewriting, IP ranges and hit labels: no servers needed.

What a recipient's mail client or a forger can do to a URL, and what each kind
of fetcher (a person, Apple's and Google's proxies, a security gateway, a bot,
the sender's own browser) is labelled as.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from itsdangerous import URLSafeSerializer

from config import get_settings
from core.tracking import __main__ as refresh_command
from core.tracking.classify import (
    HitClass,
    HitFacts,
    classify,
    client_ip,
    is_prefetch,
    same_network,
)
from core.tracking.html import apply_tracking
from core.tracking.ranges import (
    APPLE_FILE,
    EOP_FILE,
    KnownRanges,
    RangeFileError,
    RangeSet,
    known_ranges,
    load_range_file,
    parse_range_file,
)
from core.tracking.tokens import (
    CLICK_SALT,
    click_token,
    device_cookie,
    open_token,
    read_click_token,
    read_device_cookie,
    read_open_token,
)
from tests.conftest import TEST_SECRET_KEY
from worker.events import _is_crawler

BASE = "https://track.example.test"
CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131 Safari/537.36"
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("SIGHTLINE_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# -- tokens ---------------------------------------------------------------------------


def test_an_open_token_names_the_message_and_recipient_and_nothing_else_reads_it() -> None:
    token = open_token(41, 7, 0, 1_800_000_000)
    parsed = read_open_token(token)
    assert parsed is not None
    assert (parsed.sent_message_id, parsed.team_id, parsed.recipient) == (41, 7, 0)
    assert "@" not in token  # the recipient is an index, never an address

    mangled = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert read_open_token(mangled) is None
    assert read_open_token(token[: len(token) // 2]) is None
    assert read_open_token(token.upper()) is None
    assert read_open_token("") is None
    assert read_open_token("../../etc/passwd") is None
    # A click token is not an open token (per-purpose salts).
    assert read_open_token(click_token(41, 7, 0, 1, 0, "https://a.test/")) is None


def test_a_click_token_carries_its_destination_and_refuses_other_schemes() -> None:
    token = click_token(41, 7, 0, 1_800_000_000, 3, "https://acme.test/pricing?a=1&b=2")
    parsed = read_click_token(token)
    assert parsed is not None
    assert (parsed.link, parsed.url) == (3, "https://acme.test/pricing?a=1&b=2")
    # Even correctly signed, a javascript: destination is not followed.
    signer = URLSafeSerializer(TEST_SECRET_KEY, salt=CLICK_SALT)
    evil = signer.dumps([41, 7, 0, 1, 0, "javascript:alert(1)"])
    assert read_click_token(evil) is None
    # Signed by someone else's key: nothing.
    other = URLSafeSerializer("another-secret-key-0123456789-abcdefghijkl", salt=CLICK_SALT)
    assert read_click_token(other.dumps([41, 7, 0, 1, 0, "https://evil.test/"])) is None


def test_the_device_cookie_is_signed() -> None:
    value = device_cookie("a" * 32, 7, 3)
    ref = read_device_cookie(value)
    assert ref is not None and (ref.device_id, ref.team_id, ref.user_id) == ("a" * 32, 7, 3)
    assert read_device_cookie(value.replace(".", "x", 1)) is None
    assert read_device_cookie("") is None


# -- rewriting at send time ---------------------------------------------------------


def _tracked(body: str) -> tuple[str, list[str]]:
    result = apply_tracking(
        body, base_url=BASE, sent_message_id=5, team_id=2, recipient=0, issued_at=1_800_000_000
    )
    return result.html, result.links


def test_links_are_rewritten_and_the_pixel_goes_before_the_end_of_the_body() -> None:
    body = (
        "<html><body><p>Hi Dana,</p>\n"
        '<p>See <a class="x" href="https://acme.test/a?x=1&amp;y=2">pricing</a> and '
        "<A HREF='http://acme.test/b'>docs</A> or <a href=https://acme.test/c>this</a>.</p>\n"
        '<p><a href="mailto:rep@seller.test">mail me</a> <a href="tel:+123">call</a> '
        '<a href="#top">top</a> <a href="https://acme.test/keep" data-sightline-untracked>keep</a>'
        f'<a href="{BASE}/d/abc">our document viewer</a>'
        "</p></body></html>"
    )
    html, links = _tracked(body)
    assert links == ["https://acme.test/a?x=1&y=2", "http://acme.test/b", "https://acme.test/c"]
    hrefs = re.findall(r'href="([^"]*)"', html, re.IGNORECASE)
    click_urls = [h for h in hrefs if h.startswith(f"{BASE}/c/")]
    assert len(click_urls) == 3
    destinations = [read_click_token(u.removeprefix(f"{BASE}/c/")) for u in click_urls]
    assert [(d.link, d.url) for d in destinations if d] == list(enumerate(links))
    untouched_links = ("mailto:rep@seller.test", "tel:+123", "#top", "https://acme.test/keep")
    for untouched in (*untouched_links, f"{BASE}/d/abc"):
        assert f'href="{untouched}"' in html
    assert 'class="x"' in html and ">pricing</a>" in html and "<A " in html
    pixel_at = html.index(f'<img src="{BASE}/o/')
    assert pixel_at < html.index("</body>")
    token = html[pixel_at:].split("/o/", 1)[1].split(".gif", 1)[0]
    assert read_open_token(token) is not None


def test_a_body_without_a_body_tag_gets_the_pixel_at_the_end() -> None:
    html, links = _tracked("<p>No links at all.</p>")
    assert links == []
    assert html.startswith("<p>No links at all.</p><img ")
    assert html.endswith(">") and "/o/" in html


# -- ranges -------------------------------------------------------------------------


def test_range_sets_answer_for_v4_v6_and_mapped_addresses() -> None:
    ranges = RangeSet.of(
        [
            ipaddress.ip_network("40.92.0.0/15"),
            ipaddress.ip_network("40.94.0.0/16"),  # adjacent: merged
            ipaddress.ip_network("2a01:111:f400::/48"),
        ]
    )
    assert "40.93.255.255" in ranges and "40.94.1.2" in ranges
    assert "40.95.0.0" not in ranges and "40.91.255.255" not in ranges
    assert "2a01:111:f400:abcd::1" in ranges and "2a01:111:f401::1" not in ranges
    assert "::ffff:40.92.0.1" in ranges
    assert "not an address" not in ranges and None not in ranges


def test_the_shipped_range_files_parse_and_say_where_they_came_from() -> None:
    for name in (APPLE_FILE, EOP_FILE):
        parsed = load_range_file(name)
        assert parsed.headers["source"].startswith("https://")
        assert parsed.headers["fetched"]
        assert parsed.headers["label"] in ("apple_proxy", "scanner")
    assert "40.107.12.34" in known_ranges().gateways
    with pytest.raises(RangeFileError, match=r"x.txt:3: not an IP range"):
        parse_range_file("x.txt", "# source: s\n10.0.0.0/8\nbogus\n")


class _Sources(http.server.BaseHTTPRequestHandler):
    bodies: dict[str, tuple[int, bytes]] = {}

    def do_GET(self) -> None:
        status, body = self.bodies.get(self.path.split("?", 1)[0], (404, b"missing"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sources() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sources)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_refresh_ranges_rewrites_the_files_from_their_sources(sources: str, tmp_path: Path) -> None:
    apple_csv = (
        "172.224.226.0/27,GB,GB-EN,London,\n172.224.226.32/27,GB,GB-EN,London,\n"
        "2a02:26f7:b3c0:4000::/64,GB,GB-EN,London,\nnot-a-prefix,XX,,,\n"
    )
    microsoft = [
        {"id": 1, "urls": ["outlook.office.com"], "ips": ["13.107.6.152/31"]},
        {
            "id": 10,
            "urls": ["*.mail.protection.outlook.com"],
            "ips": ["40.92.0.0/15", "40.107.0.0/16", "2a01:111:f400::/48"],
            "tcpPorts": "25",
        },
    ]
    _Sources.bodies = {
        "/apple.csv": (200, apple_csv.encode()),
        "/m365": (200, json.dumps(microsoft).encode()),
    }
    for name in (APPLE_FILE, EOP_FILE):
        (tmp_path / name).write_text("# source: old\n10.0.0.0/8\n")
    code = refresh_command.main(
        [
            "refresh-ranges",
            "--apple-url",
            f"{sources}/apple.csv",
            "--microsoft-url",
            f"{sources}/m365",
            "--data-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    apple = load_range_file(APPLE_FILE, tmp_path)
    assert [str(n) for n in apple.networks] == ["172.224.226.0/26", "2a02:26f7:b3c0:4000::/64"]
    assert apple.headers["source"] == f"{sources}/apple.csv"
    eop = load_range_file(EOP_FILE, tmp_path)
    assert "13.107.6.152/31" not in {str(n) for n in eop.networks}
    assert {str(n) for n in eop.networks} == {"40.92.0.0/15", "40.107.0.0/16", "2a01:111:f400::/48"}

    # A source that fails leaves the file as it was.
    _Sources.bodies = {"/apple.csv": (500, b"down"), "/m365": (200, b"[]")}
    code = refresh_command.main(
        [
            "refresh-ranges",
            "--apple-url",
            f"{sources}/apple.csv",
            "--microsoft-url",
            f"{sources}/m365",
            "--data-dir",
            str(tmp_path),
        ]
    )
    assert code == 1
    assert load_range_file(APPLE_FILE, tmp_path).networks == apple.networks
    assert load_range_file(EOP_FILE, tmp_path).networks == eop.networks


# -- labels ---------------------------------------------------------------------------

RANGES = KnownRanges(
    apple=RangeSet.of([ipaddress.ip_network("172.224.226.0/27")]),
    gateways=known_ranges().gateways,
)


def _facts(**overrides: object) -> HitFacts:
    values: dict[str, object] = {
        "kind": "open",
        "method": "GET",
        "ip": "203.0.113.9",
        "user_agent": CHROME,
        "prefetch": False,
        "team_id": 7,
        "device_team_id": None,
        "seconds_after_send": 3600.0,
    }
    values.update(overrides)
    return HitFacts(**values)  # type: ignore[arg-type]


def _label(overrides: dict[str, object], own_ips: tuple[str, ...] = ()) -> HitClass:
    verdict = classify(
        _facts(**overrides), RANGES, is_crawler=_is_crawler, own_ips=own_ips, scanner_seconds=10
    )
    return verdict.hit_class


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, HitClass.PERSON),
        ({"device_team_id": 7}, HitClass.SELF),
        ({"device_team_id": 8}, HitClass.PERSON),  # a Sightline user of another team
        ({"method": "HEAD"}, HitClass.SCANNER),
        ({"prefetch": True}, HitClass.SCANNER),
        ({"user_agent": GMAIL_PROXY, "ip": "66.249.84.1"}, HitClass.GOOGLE_PROXY),
        ({"user_agent": "Mozilla/5.0", "ip": "17.58.0.1"}, HitClass.APPLE_PROXY),
        ({"ip": "172.224.226.5"}, HitClass.APPLE_PROXY),  # Private Relay egress, an open
        ({"ip": "172.224.226.5", "kind": "click"}, HitClass.PERSON),  # a person on the relay
        ({"ip": "40.107.3.4"}, HitClass.SCANNER),  # Exchange Online Protection
        ({"ip": "104.47.17.1", "kind": "click"}, HitClass.SCANNER),
        ({"user_agent": "python-requests/2.32"}, HitClass.BOT),
        ({"user_agent": "Mozilla/5.0 (compatible; bingbot/2.0)"}, HitClass.BOT),
        ({"user_agent": ""}, HitClass.BOT),
        ({"seconds_after_send": 4.0}, HitClass.SCANNER),
        ({"seconds_after_send": 4.0, "device_team_id": 7}, HitClass.SELF),
    ],
)
def test_each_kind_of_fetcher_gets_its_label(overrides: dict[str, object], expected: str) -> None:
    assert _label(overrides) == expected


def test_a_recent_sign_in_address_marks_hits_as_self() -> None:
    assert _label({}, own_ips=("203.0.113.9",)) == HitClass.SELF
    assert _label({}, own_ips=("203.0.113.10",)) == HitClass.PERSON
    # IPv6 privacy addresses rotate within a /64.
    ipv6: dict[str, object] = {"ip": "2001:db8:1:2:5555::1"}
    assert _label(ipv6, own_ips=("2001:db8:1:2::aaaa",)) == HitClass.SELF
    assert not same_network("2001:db8:1:2::1", "2001:db8:1:3::1")


def test_prefetch_headers_and_forwarded_addresses() -> None:
    assert is_prefetch([("Purpose", "prefetch")])
    assert is_prefetch([("Sec-Purpose", "prefetch;prerender")])
    assert is_prefetch([("X-Moz", "prefetch")])
    assert not is_prefetch([("Accept", "image/*")])
    # Only a trusted proxy's X-Forwarded-For counts, and only its own (last) entry.
    assert client_ip("10.0.0.1", "1.2.3.4, 5.6.7.8", ("*",)) == "5.6.7.8"
    assert client_ip("10.0.0.1", "1.2.3.4", ("127.0.0.1",)) == "10.0.0.1"
    assert client_ip("127.0.0.1", "9.9.9.9", ("127.0.0.1",)) == "9.9.9.9"
    assert client_ip("127.0.0.1", None, ("127.0.0.1",)) == "127.0.0.1"
