"""The one outbound policy: where the server may connect when a user chose the destination.

Sightline is hosted by an operator for many teams. Whatever a team types that
makes the server open a connection (an IMAP or SMTP server and port, an EWS
URL, a Salesforce login host, a token answer's instance URL) passes through
here, at connect time *and* every later time the stored value is used (sync,
IDLE, send, refresh): the allow-list or DNS may have changed since.

    what the user gave ─▶ spelling check ─▶ resolve once ─▶ every address checked
          (host, port)      (one canonical      (getaddrinfo)     (after unwrapping
          or a URL           form only)                            IPv4 in IPv6)
                                                     │
                              Destination(host, port, checked addresses)
                                                     │
                     open_socket(): connect to those very addresses, nothing else

Why each step:

- *Spelling*. `getaddrinfo` accepts the legacy inet_aton forms (`2130706433`,
  `0x7f000001`, `0177.0.0.1`, `127.1`), so a check on the text could be fooled;
  the check is on the resolved address, and odd spellings are refused outright
  so what a person reads in the settings is where we go. A host is a canonical
  dotted-quad IPv4, an IPv6 literal (optionally in brackets, no zone), or an
  ASCII name of letter-digit-hyphen labels whose last label starts with a
  letter: no trailing dot, no percent-encoding, no userinfo, no backslash, no
  Unicode (use the xn-- form).
- *Every address*. A name answering with one public and one private address is
  refused: otherwise a round-robin answer picks the private one half the time.
- *Pinning*. The connection goes to the checked address (`open_socket`), never
  to the name again, so a second DNS answer (rebinding) cannot change it. TLS
  still names the host (SNI, certificate check): callers keep `Destination.host`.
- *Refused ranges*: loopback, private, link-local, unique-local, shared (CGNAT
  100.64/10), multicast, reserved, unspecified, documentation and benchmarking
  ranges, and whatever Python's `ipaddress` says is not global; IPv4 carried in
  IPv6 (mapped ::ffff:a.b.c.d, compatible ::a.b.c.d, SIIT, NAT64 64:ff9b::/96,
  6to4 2002::/16) is judged as the IPv4 address it carries; Teredo is refused.
- *Exceptions*. The operator lists networks in `SIGHTLINE_ALLOWED_NETWORKS`
  (CIDRs). Outside production, loopback is allowed too, so a mail server on
  the developer's machine works; private networks still need listing.

Errors are one type, `OutboundError`, whose message is a sentence for the
user naming what *they* typed ("imap.example.com: this address is not
allowed"). It never carries bytes a remote end sent, nor the address a name
resolved to (that would let a team map the operator's internal DNS): those go
to the log, for the operator.

Operator settings (SALESFORCE_LOGIN_URL, the Gmail and Graph endpoints, ...)
do not come through here: the operator may point them anywhere.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from config import get_settings
from core.outbound_deadline import adopt

log = logging.getLogger(__name__)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SockAddr = tuple[Any, ...]

NOT_ALLOWED = "this address is not allowed"
ALLOW_HINT = "an operator can allow a network with SIGHTLINE_ALLOWED_NETWORKS"

# Refused whatever Python's `ipaddress` version says (its tables grew over
# releases; 3.11's misses several). IANA special-purpose registries, RFC 6890.
REFUSED_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT)
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/128",
        "::1/128",
        "::ffff:0:0/96",  # IPv4-mapped: judged by the IPv4 it carries, never as itself
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) included
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "5f00::/16",  # SRv6 SIDs
        "fc00::/7",  # unique-local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.ip_network("::/96")

_DOTTED_QUAD = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
)
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LAST_LABEL = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_IPV6_TEXT = re.compile(r"[0-9a-f:.]+")
_URL_AUTHORITY = re.compile(r"(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::\d{1,5})?")


class OutboundError(Exception):
    """The server will not connect there. The message is for the user; never remote bytes.

    `permanent` is False only when trying again later can help (a name that did
    not resolve this time).
    """

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Policy:
    """What may be reached: loopback or not, and the operator's listed networks."""

    allow_loopback: bool
    allowed_networks: tuple[Network, ...] = ()


@dataclass(frozen=True)
class Destination:
    """A checked place to connect: the name (for TLS and Host) and the addresses to dial."""

    host: str
    port: int
    addresses: tuple[tuple[int, SockAddr], ...]  # (family, sockaddr), resolver order
    purpose: str

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def current_policy() -> Policy:
    """The policy of this process's settings: loopback only outside production."""
    settings = get_settings()
    return Policy(
        allow_loopback=not settings.is_production,
        allowed_networks=settings.allowed_networks,
    )


# -- spelling ------------------------------------------------------------------------


def normalize_host(raw: str) -> str:
    """The one canonical spelling of a host a user typed, lower-cased; else OutboundError.

    Accepts a canonical dotted-quad IPv4, an IPv6 literal (bare or in brackets,
    no zone id) or an ASCII DNS name whose last label starts with a letter.
    """
    host = raw if isinstance(raw, str) else ""
    shown = _shown(host)
    if not host.strip():
        raise OutboundError("the server name is empty")
    if not host.isascii():
        raise OutboundError(
            f"{shown}: write the server name in ASCII (an international name in its xn-- form)"
        )
    host = host.lower()
    if host.startswith("[") and host.endswith("]"):
        return _ipv6_literal(host[1:-1], shown)
    if ":" in host:
        return _ipv6_literal(host, shown)
    if _DOTTED_QUAD.fullmatch(host):
        return host
    if len(host) > 253 or host.endswith("."):
        raise OutboundError(f"{shown}: write the server name without a trailing dot")
    labels = host.split(".")
    if not (all(_LABEL.fullmatch(label) for label in labels) and _LAST_LABEL.fullmatch(labels[-1])):
        raise OutboundError(
            f"{shown}: not a server name or an address in its usual form "
            "(letters, digits, hyphens and dots; an IPv4 address as four decimal numbers)"
        )
    return host


def _ipv6_literal(text: str, shown: str) -> str:
    if not _IPV6_TEXT.fullmatch(text):
        raise OutboundError(f"{shown}: not an IPv6 address in its usual form")
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise OutboundError(f"{shown}: not an IPv6 address in its usual form") from None


def _shown(text: str) -> str:
    """What the user typed, made safe to put in a message: printable, short."""
    cleaned = "".join(c if c.isprintable() else "?" for c in text)
    return cleaned[:100] + ("…" if len(cleaned) > 100 else "")


def split_url(url: str, *, schemes: Sequence[str]) -> tuple[str, str, int]:
    """(scheme, canonical host, port) of a URL a user gave; else OutboundError.

    The authority must be a plain host (see `normalize_host`) with an optional
    port: no userinfo (`https://good@evil`), no percent-encoding, no backslash,
    no whitespace or control characters anywhere in the URL.
    """
    text = url if isinstance(url, str) else ""
    shown = _shown(text)
    if not text or any(not c.isprintable() or c.isspace() for c in text) or "\\" in text:
        raise OutboundError(f"{shown}: not a URL in its usual form")
    if not text.isascii():
        raise OutboundError(f"{shown}: write the URL in ASCII (a name in its xn-- form)")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise OutboundError(f"{shown}: expected a {' or '.join(schemes)} URL")
    authority = parts.netloc.lower()
    if not _URL_AUTHORITY.fullmatch(authority):
        raise OutboundError(f"{shown}: the host part must be a plain server name and port")
    try:
        port = parts.port
    except ValueError:
        raise OutboundError(f"{shown}: the port is not a number from 1 to 65535") from None
    if port == 0:
        raise OutboundError(f"{shown}: the port is not a number from 1 to 65535")
    host = normalize_host(parts.hostname or "")
    return scheme, host, port or (443 if scheme == "https" else 80)


# -- addresses -----------------------------------------------------------------------


def carried_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, SIIT, NAT64, 6to4)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _NAT64 or address in _SIIT:
        return low
    if address in _COMPATIBLE and int(address) > 1:  # not :: or ::1 themselves
        return low
    return None


def refusal(address: Address, policy: Policy) -> str | None:
    """Why `address` may not be reached under `policy` (a short word for the log), or None."""
    inner = carried_ipv4(address)
    judged = inner if inner is not None else address
    for candidate in (address, judged):
        if any(candidate in network for network in policy.allowed_networks):
            return None
    # Loopback outside production: the address itself, or IPv4 loopback mapped into IPv6
    # (the same connection); not loopback wrapped in NAT64 or 6to4, which goes elsewhere.
    mapped = isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None
    if policy.allow_loopback and (address.is_loopback or (mapped and judged.is_loopback)):
        return None
    for word, hit in (
        ("unspecified", judged.is_unspecified),
        ("loopback", judged.is_loopback),
        ("link-local", judged.is_link_local),
        ("multicast", judged.is_multicast),
        ("private", judged.is_private),
        ("reserved", judged.is_reserved),
        ("special-purpose", any(judged in network for network in REFUSED_NETWORKS)),
        ("not-global", not judged.is_global),
    ):
        if hit:
            return word
    if isinstance(judged, ipaddress.IPv6Address) and judged.is_site_local:
        return "site-local"
    return None


def check_address(address: Address, policy: Policy | None = None) -> bool:
    """True if `address` may be reached under `policy` (default: this process's)."""
    return refusal(address, policy or current_policy()) is None


# -- resolving -----------------------------------------------------------------------


def resolve(host: str, port: int, *, purpose: str, policy: Policy | None = None) -> Destination:
    """Check `host`'s spelling, resolve it once, check every address; the pinned Destination.

    Raises:
        OutboundError: an odd spelling, a bad port, a name that does not
            resolve (permanent=False), or any address outside the policy.
    """
    policy = policy or current_policy()
    name = normalize_host(host)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise OutboundError(f"{purpose} port: expected a number from 1 to 65535")
    try:
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError, OSError):
        raise OutboundError(f"{name}: could not resolve this name", permanent=False) from None
    addresses = _unique(
        (family, sockaddr)
        for family, _, _, _, sockaddr in found
        if family in (socket.AF_INET, socket.AF_INET6)
    )
    if not addresses:
        raise OutboundError(f"{name}: could not resolve this name", permanent=False)
    for _, sockaddr in addresses:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        why = refusal(address, policy)
        if why is not None:
            log.warning(
                "outbound_refused purpose=%s host=%s port=%s address=%s reason=%s",
                purpose,
                name,
                port,
                address,
                why,
            )
            raise OutboundError(f"{name}: {NOT_ALLOWED} ({ALLOW_HINT})")
    return Destination(host=name, port=port, addresses=tuple(addresses), purpose=purpose)


def resolve_url(
    url: str, *, purpose: str, schemes: Sequence[str] = ("https",), policy: Policy | None = None
) -> Destination:
    """`resolve` for the host and port of a URL a user gave (see `split_url`)."""
    _, host, port = split_url(url, schemes=schemes)
    return resolve(host, port, purpose=purpose, policy=policy)


def _unique(items: Iterable[tuple[int, SockAddr]]) -> list[tuple[int, SockAddr]]:
    seen: set[tuple[int, SockAddr]] = set()
    kept = []
    for family, sockaddr in items:
        key = (family, tuple(sockaddr))
        if key not in seen:
            seen.add(key)
            kept.append((family, tuple(sockaddr)))
    return kept


def open_socket(
    destination: Destination,
    timeout: float | None,
    socket_options: Sequence[tuple[int, int, int | bytes]] | None = None,
) -> socket.socket:
    """A TCP connection to one of the destination's checked addresses, tried in order.

    Never resolves anything: the addresses are the ones `resolve` checked.
    Raises the last OSError when none answers.
    """
    last: OSError | None = None
    for family, sockaddr in destination.addresses:
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            for level, option, value in socket_options or ():
                sock.setsockopt(level, option, value)
            sock.settimeout(timeout)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        adopt(sock)  # under the running sync's deadline, if any (core.outbound_deadline)
        return sock
    raise last or OSError(f"no address to connect to for {destination.label}")


def describe_os_error(exc: OSError, timeout: float | None = None) -> str:
    """A local description of a failed connection: our words, never the far side's bytes."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its TLS certificate was not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        return f"the TLS handshake failed ({reason}; check the port and the security setting)"
    if isinstance(exc, TimeoutError | socket.timeout):
        waited = f" within {timeout:.0f} s" if timeout else ""
        return f"no answer{waited}"
    if isinstance(exc, ConnectionRefusedError):
        return "the connection was refused (nothing listens on that port)"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "the server closed the connection"
    return exc.strerror or type(exc).__name__
