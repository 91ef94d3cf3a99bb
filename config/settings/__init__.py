"""Settings read once from the environment into a typed, frozen object.

Every process (web, worker, cron, listener, release, CLI) calls `get_settings()`.
A bad value stops start-up with a `ConfigError` that names the variable. Nothing
here talks to the database or Redis; starting the embedded Redis server is the job
of `core.redis`.

Local runs need no configuration at all: the database is an SQLite file under
`var/`, Redis is an embedded real server on a unix socket under `var/`, and the
signing and encryption keys are generated once and kept (mode 0600) under `var/`.
In production (`SIGHTLINE_ENV=production`, implied on Heroku by `DYNO`) the keys,
`DATABASE_URL`, `REDIS_URL` and `PUBLIC_BASE_URL` are required instead: a dyno's
filesystem is ephemeral, so a generated key would change on every restart.

This module defines `Settings` and assembles it in `load_settings`; each group of
variables is read by its own module: `parsing` (one variable: whole numbers,
booleans, URLs; `ConfigError`), `services` (database, Redis, public URL),
`security` (keys, sign-in limits, forwarded and allowed networks), `salesforce`,
`providers` (Gmail, Microsoft 365, Exchange), `addons` (the Gmail add-on),
`documents` and `sending` (daily caps, spacing, quota back-off, the bounce guard).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from config.settings.addons import GmailAddonSettings, read_gmail_addon
from config.settings.documents import DocumentSettings, read_documents
from config.settings.parsing import ConfigError, env_bool, env_int, env_str
from config.settings.providers import MailProviderSettings, read_mail_providers
from config.settings.salesforce import SalesforceSettings, read_salesforce
from config.settings.security import (
    SigninLimitSettings,
    read_allowed_networks,
    read_encryption_keys,
    read_forwarded_allow_ips,
    read_secret_key,
    read_secret_key_fallbacks,
    read_signin_limits,
)
from config.settings.sending import SendingSettings, read_sending
from config.settings.services import (
    parse_database_url,
    parse_public_base_url,
    parse_redis_url,
    parse_tracking_cname_targets,
)
from config.settings.team_mail import TeamMailSettings, read_team_mail

__all__ = [
    "ENVIRONMENTS",
    "PROJECT_ROOT",
    "ConfigError",
    "DocumentSettings",
    "GmailAddonSettings",
    "MailProviderSettings",
    "SalesforceSettings",
    "SendingSettings",
    "Settings",
    "SigninLimitSettings",
    "get_settings",
    "load_settings",
]


# This file is config/settings/__init__.py: the repository is three levels up.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


ENVIRONMENTS = ("development", "test", "production")


@dataclass(frozen=True)
class Settings:
    env: str
    var_dir: Path
    database_url: str
    redis_url: str
    redis_embedded: bool
    redis_tls_verify: bool
    secret_key: str = field(repr=False)
    encryption_keys: tuple[str, ...] = field(repr=False)
    public_base_url: str
    port: int
    log_level: str
    salesforce: SalesforceSettings
    sync_poll_seconds: int
    sequence_tick_seconds: int
    # A mailbox whose push was measured slow (worker/sync/push_latency.py) is
    # polled this often; a sync counts as fresh for a follow-up step only this long
    # (worker/sequences/freshness.py).
    slow_push_poll_seconds: int
    fresh_seconds: int
    # The longest a sync may hold its connections to a server a team named
    # (core/outbound_deadline.py, worker/sync/engine.py).
    sync_deadline_seconds: int
    salesforce_flush_seconds: int
    salesforce_lease_seconds: int
    send_recovery_seconds: int
    listener_shards: int
    listener_shard: int
    max_inbound_bytes: int
    documents: DocumentSettings = field(default_factory=DocumentSettings)
    providers: MailProviderSettings = field(default_factory=MailProviderSettings)
    sending: SendingSettings = field(default_factory=SendingSettings)
    gmail_addon: GmailAddonSettings = field(default_factory=GmailAddonSettings)
    team_mail: TeamMailSettings = field(default_factory=TeamMailSettings)
    web_concurrency: int = 2
    # Who may set X-Forwarded-For: "*" (behind Heroku's router) or comma-separated IPs.
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    tracking_self_window_hours: int = 168
    tracking_scanner_seconds: int = 10
    tracking_pii_days: int = 7
    # Inbound signals: see worker/sequences/rules.py.
    auto_reply_pause_seconds: int = 3 * 86400
    auto_reply_max_pause_days: int = 90
    soft_bounce_limit: int = 3
    soft_bounce_window_days: int = 7
    soft_bounce_retry_seconds: int = 4 * 3600
    # Wall-clock budget for classifying one inbound message (worker/matching/budget.py);
    # over it the message is quarantined and retried with a doubled budget.
    classify_budget_ms: int = 1500
    # Former SECRET_KEYs, newest first: still accepted when checking a signature, never
    # used to sign. Pixels, links and document links in emails already sent carry
    # tokens signed with the key of their day; without this a rotation breaks them all.
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    signin_limits: SigninLimitSettings = field(default_factory=SigninLimitSettings)
    # Networks a team's mail servers and URLs may be in although they are private
    # (core.outbound refuses private, loopback, link-local ... addresses otherwise).
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Where a team's tracking host must point (core.tracking_domains): names, or
    # ".suffix" for any name under a domain. Empty: the host of public_base_url.
    tracking_cname_targets: tuple[str, ...] = ()

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def signing_keys(self) -> list[str]:
        """For itsdangerous: every key a signature may be checked with, the signing key last."""
        return [*reversed(self.secret_key_fallbacks), self.secret_key]

    def secrets_to_redact(self) -> tuple[str, ...]:
        """Values that must never appear in a log line."""
        values = [self.secret_key, *self.secret_key_fallbacks, *self.encryption_keys]
        sf = self.salesforce
        values += [
            v
            for v in (
                sf.access_token,
                sf.password,
                sf.security_token,
                sf.client_secret,
                sf.jwt_private_key,
            )
            if v
        ]
        mp = self.providers
        values += [
            v
            for v in (mp.google_client_secret, mp.gmail_push_token, mp.microsoft_client_secret)
            if v
        ]
        if self.team_mail.smtp is not None and self.team_mail.smtp.password:
            values.append(self.team_mail.smtp.password)
        redis_password = urlsplit(self.redis_url).password
        db_password = urlsplit(self.database_url).password
        values += [v for v in (redis_password, db_password) if v]
        return tuple(v for v in values if len(v) >= 6)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting. Raises ConfigError naming the variable."""
    env = os.environ if env is None else env
    raw_env = env_str(env, "SIGHTLINE_ENV") or (
        "production" if env_str(env, "DYNO") else "development"
    )
    if raw_env not in ENVIRONMENTS:
        raise ConfigError(
            f"SIGHTLINE_ENV: expected one of {', '.join(ENVIRONMENTS)}, got {raw_env!r}"
        )
    production = raw_env == "production"

    var_dir = Path(env_str(env, "SIGHTLINE_VAR_DIR") or PROJECT_ROOT / "var").resolve()
    port = env_int(env, "PORT", 5000, 1, 65535)

    if production:
        for required in (
            "DATABASE_URL",
            "REDIS_URL",
            "SECRET_KEY",
            "SIGHTLINE_ENCRYPTION_KEY",
            "PUBLIC_BASE_URL",
        ):
            if env_str(env, required) is None:
                raise ConfigError(f"{required}: required when SIGHTLINE_ENV=production")

    secret_key = read_secret_key(env, var_dir)
    encryption_keys = read_encryption_keys(env, var_dir)

    redis_url, redis_embedded = parse_redis_url(env_str(env, "REDIS_URL"), var_dir)
    log_level = (env_str(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    salesforce = read_salesforce(env)

    shards = env_int(env, "SIGHTLINE_LISTENER_SHARDS", 1, 1, 1024)
    return Settings(
        env=raw_env,
        var_dir=var_dir,
        database_url=parse_database_url(env_str(env, "DATABASE_URL"), var_dir),
        redis_url=redis_url,
        redis_embedded=redis_embedded,
        redis_tls_verify=env_bool(env, "REDIS_TLS_VERIFY", True),
        secret_key=secret_key,
        encryption_keys=encryption_keys,
        public_base_url=parse_public_base_url(env_str(env, "PUBLIC_BASE_URL"), port),
        port=port,
        log_level=log_level,
        salesforce=salesforce,
        sync_poll_seconds=env_int(env, "SIGHTLINE_SYNC_POLL_SECONDS", 60, 5, 86400),
        sequence_tick_seconds=env_int(env, "SIGHTLINE_SEQUENCE_TICK_SECONDS", 10, 1, 3600),
        slow_push_poll_seconds=env_int(env, "SIGHTLINE_SLOW_PUSH_POLL_SECONDS", 15, 5, 3600),
        fresh_seconds=env_int(env, "SIGHTLINE_FRESH_SECONDS", 30, 5, 3600),
        sync_deadline_seconds=env_int(env, "SIGHTLINE_SYNC_DEADLINE_SECONDS", 300, 1, 3600),
        salesforce_flush_seconds=env_int(env, "SIGHTLINE_SALESFORCE_FLUSH_SECONDS", 30, 1, 3600),
        salesforce_lease_seconds=env_int(env, "SIGHTLINE_SALESFORCE_LEASE_SECONDS", 600, 5, 86400),
        send_recovery_seconds=env_int(env, "SIGHTLINE_SEND_RECOVERY_SECONDS", 300, 5, 86400),
        listener_shards=shards,
        listener_shard=_listener_shard(env, shards),
        providers=read_mail_providers(
            env, parse_public_base_url(env_str(env, "PUBLIC_BASE_URL"), port), production=production
        ),
        max_inbound_bytes=env_int(
            env, "SIGHTLINE_MAX_INBOUND_BYTES", 25 * 1024 * 1024, 1024, 200 * 1024 * 1024
        ),
        documents=read_documents(env, var_dir),
        sending=read_sending(env),
        gmail_addon=read_gmail_addon(env),
        team_mail=read_team_mail(env),
        web_concurrency=env_int(env, "WEB_CONCURRENCY", 2, 1, 64),
        forwarded_allow_ips=read_forwarded_allow_ips(env),
        tracking_self_window_hours=env_int(
            env, "SIGHTLINE_TRACKING_SELF_WINDOW_HOURS", 168, 0, 24 * 365
        ),
        tracking_scanner_seconds=env_int(env, "SIGHTLINE_TRACKING_SCANNER_SECONDS", 10, 0, 3600),
        tracking_pii_days=env_int(env, "SIGHTLINE_TRACKING_PII_DAYS", 7, 1, 3650),
        auto_reply_pause_seconds=env_int(
            env, "SIGHTLINE_AUTO_REPLY_PAUSE_SECONDS", 3 * 86400, 1, 90 * 86400
        ),
        auto_reply_max_pause_days=env_int(env, "SIGHTLINE_AUTO_REPLY_MAX_PAUSE_DAYS", 90, 1, 365),
        soft_bounce_limit=env_int(env, "SIGHTLINE_SOFT_BOUNCE_LIMIT", 3, 1, 20),
        soft_bounce_window_days=env_int(env, "SIGHTLINE_SOFT_BOUNCE_WINDOW_DAYS", 7, 1, 90),
        soft_bounce_retry_seconds=env_int(
            env, "SIGHTLINE_SOFT_BOUNCE_RETRY_SECONDS", 4 * 3600, 1, 7 * 86400
        ),
        classify_budget_ms=env_int(env, "SIGHTLINE_CLASSIFY_BUDGET_MS", 1500, 10, 600_000),
        secret_key_fallbacks=read_secret_key_fallbacks(env, secret_key),
        signin_limits=read_signin_limits(env),
        allowed_networks=read_allowed_networks(env),
        tracking_cname_targets=parse_tracking_cname_targets(
            env_str(env, "SIGHTLINE_TRACKING_CNAME_TARGET"),
            parse_public_base_url(env_str(env, "PUBLIC_BASE_URL"), port),
        ),
    )


def _listener_shard(env: Mapping[str, str], shards: int) -> int:
    raw = env_str(env, "SIGHTLINE_LISTENER_SHARD")
    if raw is None:
        # On Heroku, DYNO is "listener.3": dynos are numbered from 1.
        dyno = env_str(env, "DYNO") or ""
        name, _, number = dyno.partition(".")
        if name == "listener" and number.isdigit():
            return (int(number) - 1) % shards
        return 0
    return env_int(env, "SIGHTLINE_LISTENER_SHARD", 0, 0, shards - 1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use."""
    return load_settings()
