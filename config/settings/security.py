"""Secrets and who may reach us: signing and encryption keys, sign-in limits, networks.

`read_secret_key` and `read_encryption_keys` take the keys from the environment,
or in local runs generate them once and keep them (mode 0600) under `var/`;
production requires them (`config.settings.load_settings` checks first). Former
signing keys stay valid for checking only. `FORWARDED_ALLOW_IPS` says who may set
X-Forwarded-For; `SIGHTLINE_ALLOWED_NETWORKS` the private networks a team's
servers may be in (`core.outbound` refuses private addresses otherwise).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import ipaddress
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet

from config.settings.parsing import ConfigError, env_int, env_str


@dataclass(frozen=True)
class SigninLimitSettings:
    """How many failed sign-ins a fixed window allows (web/signin_limit.py).

    Per email and client address: one person guessing one account. Per address:
    one address trying many accounts. Per email: many addresses guessing one
    account (set it high: reaching it locks the account's owner out too, for
    what is left of the window).
    """

    window_seconds: int = 900
    per_email_ip: int = 10
    per_ip: int = 100
    per_email: int = 50


def read_secret_key(env: Mapping[str, str], var_dir: Path) -> str:
    """SECRET_KEY, or one generated once and kept under `var_dir` (local runs)."""
    secret_key = env_str(env, "SECRET_KEY")
    if secret_key is None:
        secret_key = _keep_local_secret(var_dir / "secret_key", lambda: secrets.token_urlsafe(48))
    if len(secret_key) < 32:
        raise ConfigError("SECRET_KEY: must be at least 32 characters (use a random value)")
    return secret_key


def read_encryption_keys(env: Mapping[str, str], var_dir: Path) -> tuple[str, ...]:
    """SIGHTLINE_ENCRYPTION_KEY (newest first), or one generated once under `var_dir`."""
    raw_keys = env_str(env, "SIGHTLINE_ENCRYPTION_KEY")
    if raw_keys is None:
        raw_keys = _keep_local_secret(
            var_dir / "encryption_key", lambda: Fernet.generate_key().decode()
        )
    return _fernet_keys(raw_keys)


def _keep_local_secret(path: Path, make: Callable[[], str]) -> str:
    """Return the secret stored at `path`, creating it once (0600) if missing.

    Several local processes start at the same moment; an exclusive lock on a
    sibling file makes exactly one of them write the secret.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path.read_text().strip()
        value = make()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
        return value


def _fernet_keys(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list of Fernet keys, newest first (MultiFernet order)."""
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if not keys:
        raise ConfigError("SIGHTLINE_ENCRYPTION_KEY: empty")
    for index, key in enumerate(keys):
        try:
            decoded = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 32:
            raise ConfigError(
                f"SIGHTLINE_ENCRYPTION_KEY: key #{index + 1} is not a Fernet key "
                "(32 url-safe base64-encoded bytes; make one with "
                '`python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`)'
            )
    return keys


def read_secret_key_fallbacks(env: Mapping[str, str], secret_key: str) -> tuple[str, ...]:
    raw = env_str(env, "SECRET_KEY_FALLBACKS") or ""
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for index, key in enumerate(keys):
        if len(key) < 32:
            raise ConfigError(
                f"SECRET_KEY_FALLBACKS: key #{index + 1} is shorter than 32 characters "
                "(it must be a former SECRET_KEY, exactly as it was)"
            )
        if key == secret_key:
            raise ConfigError(
                f"SECRET_KEY_FALLBACKS: key #{index + 1} is the current SECRET_KEY; "
                "list only former keys"
            )
    return keys


def read_signin_limits(env: Mapping[str, str]) -> SigninLimitSettings:
    return SigninLimitSettings(
        window_seconds=env_int(env, "SIGHTLINE_SIGNIN_WINDOW_SECONDS", 900, 10, 86400),
        per_email_ip=env_int(env, "SIGHTLINE_SIGNIN_MAX_FAILURES", 10, 1, 10_000),
        per_ip=env_int(env, "SIGHTLINE_SIGNIN_MAX_FAILURES_PER_IP", 100, 1, 1_000_000),
        per_email=env_int(env, "SIGHTLINE_SIGNIN_MAX_FAILURES_PER_EMAIL", 50, 1, 1_000_000),
    )


def read_forwarded_allow_ips(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = env_str(env, "FORWARDED_ALLOW_IPS") or ("*" if env_str(env, "DYNO") else "127.0.0.1")
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    for value in values:
        if value == "*":
            continue
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(
                f"FORWARDED_ALLOW_IPS: expected * or comma-separated IP addresses, got {value!r}"
            ) from None
    return values


def read_allowed_networks(
    env: Mapping[str, str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """SIGHTLINE_ALLOWED_NETWORKS: comma-separated CIDRs (or single addresses) teams may reach."""
    raw = env_str(env, "SIGHTLINE_ALLOWED_NETWORKS") or ""
    networks = []
    for value in (v.strip() for v in raw.split(",")):
        if not value:
            continue
        try:
            networks.append(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise ConfigError(
                "SIGHTLINE_ALLOWED_NETWORKS: expected comma-separated networks such as "
                f"10.20.0.0/16 or fd00:1::/64, got {value!r} ({exc})"
            ) from None
    return tuple(networks)
