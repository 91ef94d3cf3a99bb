"""The outbound policy itself (core.outbound), over the table of spellings.

No mail server is involved: a name is resolved by this machine's resolver
(`localhost` from /etc/hosts; every other entry is a literal), and what the
policy answers is checked for production, development and an operator's
SIGHTLINE_ALLOWED_NETWORKS. The connection-level tests (a live listener, the
API, the forms, pinning) are in test_outbound_mail.py.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from config import get_settings
from config.settings import ConfigError, load_settings
from core.outbound import (
    OutboundError,
    Policy,
    current_policy,
    normalize_host,
    open_socket,
    resolve,
    resolve_url,
    split_url,
)
from tests.security.listeners import Listener
from tests.security.outbound_spellings import (
    INTERNAL_SPELLINGS,
    LOOPBACK_SPELLINGS,
    LOOPBACK_URLS,
    MALFORMED_SPELLINGS,
    MALFORMED_URLS,
    PUBLIC_SPELLINGS,
)

FERNET_KEY = Fernet.generate_key().decode()
PRODUCTION = Policy(allow_loopback=False)
DEVELOPMENT = Policy(allow_loopback=True)
# In development a local mail server works: loopback written the usual way.
DEVELOPMENT_LOOPBACK = {
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "localhost",
    "LOCALHOST",
    "LocalHost",
    "::1",
    "[::1]",
    "0:0:0:0:0:0:0:1",
    "0000:0000:0000:0000:0000:0000:0000:0001",
    "::ffff:127.0.0.1",
    "[::ffff:127.0.0.1]",
    "::ffff:7f00:1",
    "[::ffff:7f00:1]",
    "0:0:0:0:0:ffff:7f00:1",
}


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + INTERNAL_SPELLINGS + MALFORMED_SPELLINGS)
def test_production_refuses_every_internal_spelling(host: str) -> None:
    with pytest.raises(OutboundError) as refused:
        resolve(host, 993, purpose="IMAP", policy=PRODUCTION)
    message = str(refused.value)
    assert refused.value.permanent, message
    if host.strip() and host.isascii() and host.lower().startswith("localhost"):
        # The answer names what the person typed, never what it resolved to.
        assert "127.0.0.1" not in message, message


@pytest.mark.parametrize("host", PUBLIC_SPELLINGS)
def test_public_addresses_are_allowed_and_pinned_as_checked(host: str) -> None:
    destination = resolve(host, 993, purpose="IMAP", policy=PRODUCTION)
    [(family, sockaddr)] = destination.addresses
    literal = host.strip("[]")
    assert ipaddress.ip_address(sockaddr[0]) == ipaddress.ip_address(literal)
    assert family == (socket.AF_INET6 if ":" in literal else socket.AF_INET)
    assert destination.host == str(ipaddress.ip_address(literal)).lower()


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + INTERNAL_SPELLINGS)
def test_development_allows_loopback_written_plainly_and_nothing_else(host: str) -> None:
    if host in DEVELOPMENT_LOOPBACK:
        destination = resolve(host, 143, purpose="IMAP", policy=DEVELOPMENT)
        for _, sockaddr in destination.addresses:
            address = ipaddress.ip_address(sockaddr[0])
            assert address.is_loopback or (
                isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None
            )
    else:
        with pytest.raises(OutboundError):
            resolve(host, 143, purpose="IMAP", policy=DEVELOPMENT)


@pytest.mark.parametrize("host", MALFORMED_SPELLINGS)
def test_odd_spellings_are_refused_before_any_lookup(host: str) -> None:
    with pytest.raises(OutboundError):
        normalize_host(host)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("10.20.1.2", True),
        ("10.20.255.254", True),
        ("::ffff:10.20.1.2", True),
        ("10.21.0.1", False),
        ("10.19.255.255", False),
        ("fd00:1::5", True),
        ("fd00:2::5", False),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
    ],
)
def test_the_operator_lists_the_private_networks_teams_may_reach(host: str, allowed: bool) -> None:
    policy = Policy(
        allow_loopback=False,
        allowed_networks=(
            ipaddress.ip_network("10.20.0.0/16"),
            ipaddress.ip_network("fd00:1::/64"),
        ),
    )
    if allowed:
        assert resolve(host, 25, purpose="SMTP", policy=policy).addresses
    else:
        with pytest.raises(OutboundError, match="not allowed"):
            resolve(host, 25, purpose="SMTP", policy=policy)


@pytest.mark.parametrize("port", [0, -1, 65536, 10**9])
def test_a_port_outside_1_to_65535_is_refused(port: int) -> None:
    with pytest.raises(OutboundError, match="port"):
        resolve("8.8.8.8", port, purpose="SMTP", policy=PRODUCTION)


@pytest.mark.parametrize("url", LOOPBACK_URLS)
def test_production_refuses_every_loopback_url(url: str) -> None:
    with pytest.raises(OutboundError):
        resolve_url(
            url.format(port=8443), purpose="Exchange", schemes=("https", "http"), policy=PRODUCTION
        )


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_odd_urls_are_refused_whatever_the_host(url: str) -> None:
    with pytest.raises(OutboundError):
        split_url(url, schemes=("https", "http"))


def test_a_plain_url_is_split_to_its_canonical_host_and_port() -> None:
    schemes = ("https", "http")
    assert split_url("https://Mail.Example.COM/EWS/Exchange.asmx", schemes=schemes) == (
        "https",
        "mail.example.com",
        443,
    )
    assert split_url("http://[2001:4860:4860::8888]:8080/x", schemes=schemes) == (
        "http",
        "2001:4860:4860::8888",
        8080,
    )


def test_an_unresolvable_name_is_refused_for_now_not_forever() -> None:
    with pytest.raises(OutboundError, match="could not resolve") as refused:
        resolve("no-such-host.invalid", 993, purpose="IMAP", policy=PRODUCTION)
    assert not refused.value.permanent


def test_the_connection_goes_to_the_checked_address() -> None:
    with Listener("127.0.0.1", banner=b"* OK\r\n") as listener:
        destination = resolve("localhost", listener.port, purpose="IMAP", policy=DEVELOPMENT)
        with open_socket(destination, timeout=5) as sock:
            assert sock.recv(16) == b"* OK\r\n"
        assert len(listener.connections) == 1


def test_the_policy_follows_the_environment_and_the_operator_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    production = {
        "SIGHTLINE_ENV": "production",
        "DATABASE_URL": "postgresql://db.invalid/sightline",
        "REDIS_URL": "redis://redis.invalid:6379/0",
        "SECRET_KEY": "k" * 40,
        "SIGHTLINE_ENCRYPTION_KEY": FERNET_KEY,
        "PUBLIC_BASE_URL": "https://sightline.example",
        "SIGHTLINE_VAR_DIR": str(tmp_path),
    }
    for name, value in production.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SIGHTLINE_ALLOWED_NETWORKS", "10.20.0.0/16, fd00:1::/64")
    get_settings.cache_clear()
    try:
        policy = current_policy()
        assert not policy.allow_loopback
        assert [str(n) for n in policy.allowed_networks] == ["10.20.0.0/16", "fd00:1::/64"]
        monkeypatch.setenv("SIGHTLINE_ENV", "development")
        get_settings.cache_clear()
        assert current_policy().allow_loopback
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    "value", ["10.0.0.5/8", "10.0.0.0/33", "intranet", "10.0.0.0/8;192.168.0.0/16"]
)
def test_a_bad_allowed_network_stops_start_up_naming_the_variable(
    value: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"^SIGHTLINE_ALLOWED_NETWORKS: "):
        load_settings(
            {
                "SIGHTLINE_ENV": "development",
                "SIGHTLINE_ALLOWED_NETWORKS": value,
                "SECRET_KEY": "k" * 40,
                "SIGHTLINE_ENCRYPTION_KEY": FERNET_KEY,
                "SIGHTLINE_VAR_DIR": str(tmp_path),
            }
        )
