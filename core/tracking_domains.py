"""A team's own tracking host: the name its pixels, clicks and document links use.

A team types a host (``track.acme.com``) and makes it a CNAME to the operator's
host (SIGHTLINE_TRACKING_CNAME_TARGET, by default the host of PUBLIC_BASE_URL).
The host is user input, so it goes through the one outbound policy
(`core.outbound`) before anything trusts it::

    typed ─▶ spelling (normalize_host) ─▶ a DNS name: not an IP literal, not one
             label, not localhost/.local/.internal, not the operator's own host
             or a name under it, not another team's ─▶ stored, *pending*
    verify ─▶ resolve the host (getaddrinfo, canonical name) ─▶ every address
             passes the outbound policy (no private, loopback in production ...)
             ─▶ points at the target? its canonical name is the target's (or
             under a ".suffix" target), or every address is one of the target's
             ─▶ *verified* (verified_at) | *failed* (the reason, in words)

Why both comparisons: a CNAME chain ends at one canonical name, which is what
a CNAME to us shows; an A record copied from ours has no chain, but the same
addresses. Messages name what the team typed and the target, never the
addresses a name resolved to (`core.outbound`'s rule: no mapping of the
operator's DNS).

Send time reads `tracking_base_url(team)`: the verified host, with the scheme
and port of PUBLIC_BASE_URL; any other team keeps PUBLIC_BASE_URL. The web
edge reads `registered_hosts` (every stored host, verified or not: a host a
team claimed is never the app) and answers only tracking paths there.

Must never: use an unverified host in a sent email; let a team claim the
operator's host, an address, or a name another team holds; show resolved addresses.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from config import get_settings
from core.models import Team
from core.models.base import utcnow
from core.outbound import NOT_ALLOWED, OutboundError, current_policy, normalize_host, refusal

log = logging.getLogger(__name__)

# Names that never leave the machine or the local network (RFC 6761, 6762, 8375).
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".invalid", ".home.arpa", ".lan")


class HostStatus(enum.StrEnum):
    NONE = "none"
    PENDING = "pending"
    VERIFIED = "verified"
    FAILED = "failed"


@dataclass(frozen=True)
class Lookup:
    canonical: str
    addresses: frozenset[str]


def operator_host() -> str:
    return (urlsplit(get_settings().public_base_url).hostname or "localhost").lower()


def targets() -> tuple[str, ...]:
    return get_settings().tracking_cname_targets or (operator_host(),)


def status(team: Team) -> HostStatus:
    if not team.tracking_host:
        return HostStatus.NONE
    if team.tracking_host_verified_at is not None:
        return HostStatus.VERIFIED
    return HostStatus.FAILED if team.tracking_host_error else HostStatus.PENDING


def tracking_base_url(team: Team) -> str:
    """Where this team's links point: its verified host, else PUBLIC_BASE_URL."""
    base = get_settings().public_base_url
    if not team.tracking_host or team.tracking_host_verified_at is None:
        return base
    parts = urlsplit(base)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{team.tracking_host}{port}"


def check_spelling(raw: str) -> str:
    """The host in its one canonical form, or OutboundError saying what is wrong with it."""
    text = raw.strip() if isinstance(raw, str) else ""
    if "/" in text or "@" in text:
        raise OutboundError(
            f"{text[:100]}: give the host name alone (track.example.com), without http:// or a path"
        )
    host = normalize_host(text)
    if ":" in host or _is_ip(host):
        raise OutboundError(f"{host}: give a host name (track.example.com), not an IP address")
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        raise OutboundError(f"{host}: a local name cannot be reached from the internet")
    if "." not in host:
        raise OutboundError(f"{host}: give a full host name, such as track.example.com")
    for own in {operator_host(), *(t.lstrip(".") for t in targets())}:
        if host == own or host.endswith(f".{own}"):
            raise OutboundError(
                f"{host}: this is the service's own host; use a name of your own domain"
            )
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def set_host(session: Session, team: Team, raw: str) -> str:
    """Store `raw` as the team's tracking host, pending. Raises OutboundError."""
    host = check_spelling(raw)
    taken = session.scalar(
        select(func.count()).select_from(Team).where(Team.tracking_host == host, Team.id != team.id)
    )
    if taken:
        raise OutboundError(f"{host}: another team already uses this host")
    if team.tracking_host != host:
        team.tracking_host = host
        team.tracking_host_verified_at = None
        team.tracking_host_checked_at = None
        team.tracking_host_error = None
    return host


def remove_host(team: Team) -> None:
    team.tracking_host = None
    team.tracking_host_verified_at = None
    team.tracking_host_checked_at = None
    team.tracking_host_error = None


def lookup(name: str) -> Lookup:
    """The canonical name and addresses of `name`, from this machine's resolver."""
    try:
        found = socket.getaddrinfo(
            name, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_CANONNAME
        )
    except (socket.gaierror, UnicodeError, OSError):
        raise OutboundError(
            f"{name}: could not resolve this name (add the DNS record, then verify again; "
            "a new record can take a few minutes to be seen)",
            permanent=False,
        ) from None
    canonical = next((entry[3] for entry in found if entry[3]), name).lower().rstrip(".")
    addresses = frozenset(
        str(sockaddr[0]).split("%", 1)[0]
        for family, _, _, _, sockaddr in found
        if family in (socket.AF_INET, socket.AF_INET6)
    )
    return Lookup(canonical, addresses)


def check_points_at_us(host: str) -> None:
    """Return if `host` resolves to allowed addresses and points at a target; else OutboundError."""
    found = lookup(host)
    policy = current_policy()
    for text in found.addresses:
        why = refusal(ipaddress.ip_address(text), policy)
        if why is not None:
            log.warning("tracking_host_refused host=%s address=%s reason=%s", host, text, why)
            raise OutboundError(f"{host}: {NOT_ALLOWED} (it points at a private or local address)")
    wanted = targets()
    if any(t.startswith(".") and found.canonical.endswith(t) for t in wanted):
        return
    for target in (t for t in wanted if not t.startswith(".")):
        if found.canonical == target:
            return
        try:
            ours = lookup(target)
        except OutboundError:
            log.error("tracking_target_unresolved target=%s", target)
            continue
        if found.canonical == ours.canonical or (
            found.addresses and found.addresses <= ours.addresses
        ):
            return
    raise OutboundError(
        f"{host}: does not point at {wanted[0].lstrip('.')} yet "
        f"(make it a CNAME record to {wanted[0].lstrip('.')}, then verify again)"
    )


def verify(team: Team) -> HostStatus:
    """Check the team's host now; record verified or failed with the reason."""
    if not team.tracking_host:
        return HostStatus.NONE
    team.tracking_host_checked_at = utcnow()
    try:
        check_spelling(team.tracking_host)
        check_points_at_us(team.tracking_host)
    except OutboundError as exc:
        team.tracking_host_verified_at = None
        team.tracking_host_error = str(exc)[:300]
        log.info("tracking_host_failed team_id=%s host=%s", team.id, team.tracking_host)
        return HostStatus.FAILED
    team.tracking_host_verified_at = team.tracking_host_checked_at
    team.tracking_host_error = None
    log.info("tracking_host_verified team_id=%s host=%s", team.id, team.tracking_host)
    return HostStatus.VERIFIED


def registered_hosts(session: Session) -> dict[str, int]:
    """Every team's host (verified or not) and its team id: the edge's map."""
    rows = session.execute(
        select(Team.tracking_host, Team.id).where(Team.tracking_host.is_not(None))
    )
    return {host: team_id for host, team_id in rows if host}


def verified_team_of(session: Session, host: str) -> int | None:
    """The team whose verified tracking host `host` is (a Host header: port allowed)."""
    name = request_host(host)
    if not name:
        return None
    return session.scalar(
        select(Team.id).where(
            Team.tracking_host == name, Team.tracking_host_verified_at.is_not(None)
        )
    )


def team_of(session: Session, host: str) -> int | None:
    """The team that claimed `host` (a Host header: port allowed), verified or not."""
    name = request_host(host)
    if not name:
        return None
    return session.scalar(select(Team.id).where(Team.tracking_host == name))


def request_host(header: str | None) -> str:
    """A Host header's name: lower-cased, without port or trailing dot ('' for an IP literal)."""
    value = (header or "").strip().lower()
    if value.startswith("["):
        return ""
    return value.rsplit(":", 1)[0].rstrip(".") if value.count(":") <= 1 else ""
