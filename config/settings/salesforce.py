"""Salesforce settings: the default org, the Connected App, the outbox's pacing.

`read_salesforce` reads every `SALESFORCE_*` and `SIGHTLINE_SALESFORCE_*`
variable and refuses combinations that cannot work (an access token without its
instance, a JWT username without the key to sign for it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from config.settings.parsing import ConfigError, env_int, env_str


@dataclass(frozen=True)
class SalesforceSettings:
    """Salesforce: the default org, the Connected App, and how the outbox paces itself.

    The default (settings-level) org serves every team that connected none of
    its own: an access token, username/password, or the JWT bearer flow. The
    Connected App (`client_id`/`client_secret`) is what teams connect their own
    org through (OAuth web-server flow), and what the JWT flow signs for.
    """

    instance_url: str | None = None
    access_token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)
    domain: str = "login"
    api_version: str = "62.0"
    task_key_field: str = "Sightline_Key__c"
    task_status: str = "Completed"
    login_url: str = "https://login.salesforce.com"
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    jwt_private_key: str | None = field(default=None, repr=False)
    jwt_username: str | None = None
    # (team id, Salesforce username) pairs a team may connect with the JWT bearer flow:
    # the operator's key signs for whoever is named, so teams only get the users listed.
    jwt_allowed: tuple[tuple[int, str], ...] = ()
    engagement_debounce_seconds: int = 300
    park_seconds: int = 900
    retry_base_seconds: int = 15
    retry_max_seconds: int = 3600
    timeout_seconds: int = 60
    bulk_threshold: int = 2000
    who_retry_seconds: int = 3600
    batch_seconds: int = 300

    def jwt_allows(self, team_id: int, username: str) -> bool:
        """True if the operator lets `team_id` connect as `username` with the JWT flow."""
        return (team_id, username.strip().lower()) in self.jwt_allowed

    @property
    def configured(self) -> bool:
        """True when the default org can be reached."""
        return bool(
            (self.instance_url and self.access_token)
            or (self.username and self.password)
            or (self.jwt_username and self.client_id and self.jwt_private_key)
        )


def read_salesforce(env: Mapping[str, str]) -> SalesforceSettings:
    """The default org, the Connected App and the outbox's pacing (SALESFORCE_*)."""
    sf_instance = env_str(env, "SALESFORCE_INSTANCE_URL")
    if sf_instance is not None and not sf_instance.startswith(("https://", "http://")):
        raise ConfigError(f"SALESFORCE_INSTANCE_URL: expected https://..., got {sf_instance!r}")
    sf_domain = env_str(env, "SALESFORCE_DOMAIN") or "login"
    sf_login_url = _salesforce_login_url(env, sf_domain)
    sf_client_id = env_str(env, "SALESFORCE_CLIENT_ID")
    sf_jwt_key = _jwt_private_key(env)
    salesforce = SalesforceSettings(
        instance_url=sf_instance.rstrip("/") if sf_instance else None,
        access_token=env_str(env, "SALESFORCE_ACCESS_TOKEN"),
        username=env_str(env, "SALESFORCE_USERNAME"),
        password=env_str(env, "SALESFORCE_PASSWORD"),
        security_token=env_str(env, "SALESFORCE_SECURITY_TOKEN"),
        domain=sf_domain,
        api_version=env_str(env, "SALESFORCE_API_VERSION") or "62.0",
        task_key_field=env_str(env, "SALESFORCE_TASK_KEY_FIELD") or "Sightline_Key__c",
        task_status=env_str(env, "SALESFORCE_TASK_STATUS") or "Completed",
        login_url=sf_login_url,
        client_id=sf_client_id,
        client_secret=env_str(env, "SALESFORCE_CLIENT_SECRET"),
        jwt_private_key=sf_jwt_key,
        jwt_username=env_str(env, "SALESFORCE_JWT_USERNAME"),
        jwt_allowed=_jwt_allowed(env, can_sign=bool(sf_client_id and sf_jwt_key)),
        engagement_debounce_seconds=env_int(
            env, "SIGHTLINE_SALESFORCE_ENGAGEMENT_DEBOUNCE_SECONDS", 300, 0, 86400
        ),
        park_seconds=env_int(env, "SIGHTLINE_SALESFORCE_PARK_SECONDS", 900, 1, 86400),
        retry_base_seconds=env_int(env, "SIGHTLINE_SALESFORCE_RETRY_BASE_SECONDS", 15, 1, 3600),
        retry_max_seconds=env_int(env, "SIGHTLINE_SALESFORCE_RETRY_MAX_SECONDS", 3600, 1, 86400),
        timeout_seconds=env_int(env, "SIGHTLINE_SALESFORCE_TIMEOUT_SECONDS", 60, 1, 600),
        bulk_threshold=env_int(env, "SIGHTLINE_SALESFORCE_BULK_THRESHOLD", 2000, 201, 10_000_000),
        who_retry_seconds=env_int(
            env, "SIGHTLINE_SALESFORCE_WHO_RETRY_SECONDS", 3600, 1, 7 * 86400
        ),
        # A team is flushed when a full batch is due or its oldest due row has waited
        # this long: fewer, fuller calls. Default: ten cron ticks (5 minutes).
        batch_seconds=env_int(
            env,
            "SIGHTLINE_SALESFORCE_BATCH_SECONDS",
            10 * env_int(env, "SIGHTLINE_SALESFORCE_FLUSH_SECONDS", 30, 1, 3600),
            0,
            86400,
        ),
    )
    if salesforce.jwt_username and not (sf_client_id and sf_jwt_key):
        raise ConfigError(
            "SALESFORCE_JWT_USERNAME: needs SALESFORCE_CLIENT_ID and SALESFORCE_JWT_PRIVATE_KEY"
        )
    if salesforce.access_token and not salesforce.instance_url:
        raise ConfigError("SALESFORCE_INSTANCE_URL: required with SALESFORCE_ACCESS_TOKEN")
    if salesforce.username and not salesforce.password:
        raise ConfigError("SALESFORCE_PASSWORD: required with SALESFORCE_USERNAME")
    return salesforce


def _salesforce_login_url(env: Mapping[str, str], domain: str) -> str:
    """Where logins and token grants go: login/test.salesforce.com or a My Domain."""
    raw = env_str(env, "SALESFORCE_LOGIN_URL")
    if raw is None:
        return f"https://{domain}.salesforce.com"
    parts = urlsplit(raw)
    if parts.scheme != "https" or not parts.netloc or parts.path not in ("", "/"):
        raise ConfigError(
            f"SALESFORCE_LOGIN_URL: expected https://host (e.g. https://login.salesforce.com "
            f"or your My Domain), got {raw!r}"
        )
    return raw.rstrip("/")


def _jwt_private_key(env: Mapping[str, str]) -> str | None:
    """The Connected App's RSA key for the JWT bearer flow, inline or from a file."""
    key = env_str(env, "SALESFORCE_JWT_PRIVATE_KEY")
    name = "SALESFORCE_JWT_PRIVATE_KEY"
    path = env_str(env, "SALESFORCE_JWT_PRIVATE_KEY_FILE")
    if key is None and path is not None:
        name = "SALESFORCE_JWT_PRIVATE_KEY_FILE"
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    if key is not None and not key.startswith("-----BEGIN"):
        raise ConfigError(f"{name}: expected a PEM private key (-----BEGIN ... PRIVATE KEY-----)")
    return key


def _jwt_allowed(env: Mapping[str, str], *, can_sign: bool) -> tuple[tuple[int, str], ...]:
    """SALESFORCE_JWT_ALLOWED: "<team id>:<username>" pairs, comma-separated."""
    raw = env_str(env, "SALESFORCE_JWT_ALLOWED") or ""
    if raw and not can_sign:
        raise ConfigError(
            "SALESFORCE_JWT_ALLOWED: needs SALESFORCE_CLIENT_ID and SALESFORCE_JWT_PRIVATE_KEY"
        )
    pairs = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        team, _, username = entry.partition(":")
        username = username.strip().lower()
        if (
            not team.strip().isdigit()
            or int(team) < 1
            or not re.fullmatch(r"[^\s@]+@[^\s@]+", username)
        ):
            raise ConfigError(
                "SALESFORCE_JWT_ALLOWED: expected comma-separated <team id>:<Salesforce username> "
                f"pairs (e.g. 3:integration@acme.com), got {entry!r}"
            )
        pairs.append((int(team), username))
    return tuple(pairs)
