"""Where the services are: the database, Redis, the public base URL and its CNAME target.

Unset, each points at a local default under `var/` (an SQLite file, the embedded
Redis server's unix socket) or at localhost; set, each is checked for a scheme
we can use, and `postgres://` (as Heroku hands it out) is given its driver.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from config.settings.parsing import ConfigError


def parse_database_url(raw: str | None, var_dir: Path) -> str:
    if raw is None:
        return f"sqlite:///{var_dir / 'sightline.db'}"
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    # Heroku hands out postgres:// URLs; SQLAlchemy wants an explicit driver.
    if scheme in ("postgres", "postgresql"):
        return "postgresql+psycopg://" + raw.split("://", 1)[1]
    if scheme in ("postgresql+psycopg", "sqlite"):
        return raw
    raise ConfigError(
        f"DATABASE_URL: unsupported scheme {scheme or '(none)'!r}; "
        "use postgres://, postgresql://, postgresql+psycopg:// or sqlite:///PATH"
    )


def parse_redis_url(raw: str | None, var_dir: Path) -> tuple[str, bool]:
    if raw is None:
        return f"unix://{var_dir / 'redis' / 'redis.sock'}", True
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"REDIS_URL: unsupported scheme {scheme or '(none)'!r}; use redis://, rediss:// or unix://"
        )
    return raw, False


def parse_public_base_url(raw: str | None, port: int) -> str:
    if raw is None:
        return f"http://localhost:{port}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"PUBLIC_BASE_URL: expected http(s)://host[:port], got {raw!r}")
    if parts.query or parts.fragment:
        raise ConfigError("PUBLIC_BASE_URL: must not carry a query or fragment")
    return raw.rstrip("/")


_TARGET = re.compile(
    r"\.?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


def parse_tracking_cname_targets(raw: str | None, public_base_url: str) -> tuple[str, ...]:
    """SIGHTLINE_TRACKING_CNAME_TARGET: where a team's tracking host must point.

    Comma-separated host names; one starting with a dot (``.herokudns.com``) stands
    for any name under it. Unset: the host of PUBLIC_BASE_URL.
    """
    if raw is None:
        return (urlsplit(public_base_url).hostname or "localhost",)
    targets = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    for target in targets:
        if not _TARGET.fullmatch(target) or target.count(".") < (2 if target[0] == "." else 0):
            raise ConfigError(
                "SIGHTLINE_TRACKING_CNAME_TARGET: expected host names (or .suffix for any name "
                f"under a domain, with at least two labels), got {target!r}"
            )
    if not targets:
        raise ConfigError("SIGHTLINE_TRACKING_CNAME_TARGET: expected at least one host name")
    return targets
