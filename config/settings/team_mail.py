"""Mail Sightline sends as itself (invitations to join a team), through the operator's SMTP.

    SIGHTLINE_SMTP_URL       smtp://host[:25], smtp+starttls://user:pass@host[:587]
                             (STARTTLS required) or smtps://user:pass@host[:465]
                             (TLS from the start); user and password URL-encoded.
                             Unset: nothing is mailed, the page shows the link to copy.
    SIGHTLINE_MAIL_FROM      the From address (default: the SMTP user when it is an
                             address; required otherwise)
    SIGHTLINE_INVITATION_DAYS  how long an invitation link works (default 7)

The host is the operator's, not something a team typed, so it is not passed
through `core.outbound`'s policy (a relay on localhost is the usual setup).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from config.settings.parsing import ConfigError, env_int, env_str

SECURITY_BY_SCHEME = {"smtp": "none", "smtp+starttls": "starttls", "smtps": "tls"}
DEFAULT_PORTS = {"none": 25, "starttls": 587, "tls": 465}


@dataclass(frozen=True)
class OperatorSmtp:
    host: str
    port: int
    security: str  # none, starttls, tls
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TeamMailSettings:
    smtp: OperatorSmtp | None = None
    mail_from: str | None = None
    invitation_days: int = 7


def parse_smtp_url(raw: str) -> OperatorSmtp:
    """SIGHTLINE_SMTP_URL's value as an `OperatorSmtp`. Raises ConfigError naming it."""
    parts = urlsplit(raw)
    security = SECURITY_BY_SCHEME.get(parts.scheme.lower())
    if security is None or not parts.hostname:
        raise ConfigError(
            "SIGHTLINE_SMTP_URL: expected smtp://host, smtp+starttls://user:password@host "
            "or smtps://user:password@host"
        )
    try:
        port = parts.port or DEFAULT_PORTS[security]
    except ValueError:
        raise ConfigError("SIGHTLINE_SMTP_URL: the port is not a number from 1 to 65535") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return OperatorSmtp(parts.hostname, port, security, username, password)


def read_team_mail(env: Mapping[str, str]) -> TeamMailSettings:
    raw = env_str(env, "SIGHTLINE_SMTP_URL")
    smtp = parse_smtp_url(raw) if raw else None
    mail_from = env_str(env, "SIGHTLINE_MAIL_FROM")
    if mail_from is not None and "@" not in mail_from:
        raise ConfigError(f"SIGHTLINE_MAIL_FROM: expected an email address, got {mail_from!r}")
    if smtp is not None and mail_from is None:
        if not smtp.username or "@" not in smtp.username:
            raise ConfigError(
                "SIGHTLINE_MAIL_FROM: required with SIGHTLINE_SMTP_URL when its user is not "
                "an email address"
            )
        mail_from = smtp.username
    return TeamMailSettings(
        smtp=smtp,
        mail_from=mail_from,
        invitation_days=env_int(env, "SIGHTLINE_INVITATION_DAYS", 7, 1, 90),
    )
