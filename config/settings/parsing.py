"""Reading one environment variable: the parsers every settings module uses.

Each parser takes the environment and the variable's name, returns the default
when the variable is unset or blank, and raises `ConfigError` with a message that
starts with the variable's name when the value is bad: the operator reads which
variable to fix, and what it expected, in the one line start-up fails with.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A setting is missing or invalid. The message starts with the variable's name."""


def env_str(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env_str(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}: must be between {minimum} and {maximum}, got {value}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env_str(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def env_url(env: Mapping[str, str], name: str, default: str, *, https_only: bool = False) -> str:
    raw = env_str(env, name)
    if raw is None:
        return default
    parts = urlsplit(raw)
    schemes = ("https",) if https_only else ("http", "https")
    if parts.scheme not in schemes or not parts.netloc:
        expected = "https://host/..." if https_only else "http(s)://host/..."
        raise ConfigError(f"{name}: expected {expected}, got {raw!r}")
    return raw
