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
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import ipaddress
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet

PROJECT_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger(__name__)

ENVIRONMENTS = ("development", "test", "production")


class ConfigError(Exception):
    """A setting is missing or invalid. The message starts with the variable's name."""


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


@dataclass(frozen=True)
class MailProviderSettings:
    """Gmail (Google OAuth, Pub/Sub push), Microsoft 365 (MSAL, Graph) and Exchange on-premises.

    The endpoints default to Google's and Microsoft's; they are settings so a
    deployment can use a sovereign cloud (and the tests their local fakes).
    `gmail_push_token` is the shared-secret alternative to Pub/Sub's signed push
    token for self-hosters who cannot configure push authentication.
    """

    google_client_id: str | None = None
    google_client_secret: str | None = field(default=None, repr=False)
    google_auth_uri: str = "https://accounts.google.com/o/oauth2/auth"
    google_token_uri: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    google_revoke_uri: str = "https://oauth2.googleapis.com/revoke"
    gmail_api_endpoint: str = "https://gmail.googleapis.com/"
    gmail_pubsub_topic: str | None = None
    gmail_push_audience: str | None = None
    gmail_push_service_account: str | None = None
    gmail_push_token: str | None = field(default=None, repr=False)
    gmail_push_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    microsoft_client_id: str | None = None
    microsoft_client_secret: str | None = field(default=None, repr=False)
    microsoft_authority: str = "https://login.microsoftonline.com/common"
    graph_endpoint: str = "https://graph.microsoft.com/v1.0"
    graph_notification_url: str | None = None
    exchange_stream_minutes: int = 29
    # How often a mailbox whose push is live is polled anyway (the backstop).
    push_poll_seconds: int = 1800

    @property
    def google_configured(self) -> bool:
        return bool(self.google_client_id and self.google_client_secret)

    @property
    def microsoft_configured(self) -> bool:
        return bool(self.microsoft_client_id and self.microsoft_client_secret)


@dataclass(frozen=True)
class DocumentSettings:
    """Trackable attachments: where files live and how far a document may go.

    `storage` is "database" (the default: blobs in the database, which every
    process reaches, so it works on Heroku where web and worker dynos share no
    disk) or an absolute folder path (one machine only).
    """

    storage: str = "database"
    max_bytes: int = 50 * 1024 * 1024
    max_pages: int = 500
    convert_seconds: int = 120
    render_seconds: int = 600
    render_processes: int = 2
    # auto: LibreOffice runs with no network where a namespace can be made;
    # required: refuse to convert without one; off: never (worker.documents.isolation).
    network_isolation: str = "auto"
    # The same words for a private view of the filesystem (bubblewrap): LibreOffice
    # sees the system's programs and its own job folder, no data (isolation.py).
    file_isolation: str = "auto"


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
    # Issue 22: a mailbox whose push was measured slow (worker/sync/push_latency.py) is
    # polled this often; a sync counts as fresh for a follow-up step only this long
    # (worker/sequences/freshness.py).
    slow_push_poll_seconds: int
    fresh_seconds: int
    salesforce_flush_seconds: int
    salesforce_lease_seconds: int
    send_recovery_seconds: int
    listener_shards: int
    listener_shard: int
    max_inbound_bytes: int
    documents: DocumentSettings = field(default_factory=DocumentSettings)
    providers: MailProviderSettings = field(default_factory=MailProviderSettings)
    web_concurrency: int = 2
    # Who may set X-Forwarded-For: "*" (behind Heroku's router) or comma-separated IPs.
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    tracking_self_window_hours: int = 168
    tracking_scanner_seconds: int = 10
    tracking_pii_days: int = 7
    # Inbound signals (issue 6): see worker/sequences/rules.py.
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
        redis_password = urlsplit(self.redis_url).password
        db_password = urlsplit(self.database_url).password
        values += [v for v in (redis_password, db_password) if v]
        return tuple(v for v in values if len(v) >= 6)


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}: must be between {minimum} and {maximum}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _database_url(raw: str | None, var_dir: Path) -> str:
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


def _redis_url(raw: str | None, var_dir: Path) -> tuple[str, bool]:
    if raw is None:
        return f"unix://{var_dir / 'redis' / 'redis.sock'}", True
    scheme = raw.split("://", 1)[0] if "://" in raw else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"REDIS_URL: unsupported scheme {scheme or '(none)'!r}; use redis://, rediss:// or unix://"
        )
    return raw, False


def _public_base_url(raw: str | None, port: int) -> str:
    if raw is None:
        return f"http://localhost:{port}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"PUBLIC_BASE_URL: expected http(s)://host[:port], got {raw!r}")
    if parts.query or parts.fragment:
        raise ConfigError("PUBLIC_BASE_URL: must not carry a query or fragment")
    return raw.rstrip("/")


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


def _secret_key_fallbacks(env: Mapping[str, str], secret_key: str) -> tuple[str, ...]:
    raw = _get(env, "SECRET_KEY_FALLBACKS") or ""
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


def _signin_limits(env: Mapping[str, str]) -> SigninLimitSettings:
    return SigninLimitSettings(
        window_seconds=_int(env, "SIGHTLINE_SIGNIN_WINDOW_SECONDS", 900, 10, 86400),
        per_email_ip=_int(env, "SIGHTLINE_SIGNIN_MAX_FAILURES", 10, 1, 10_000),
        per_ip=_int(env, "SIGHTLINE_SIGNIN_MAX_FAILURES_PER_IP", 100, 1, 1_000_000),
        per_email=_int(env, "SIGHTLINE_SIGNIN_MAX_FAILURES_PER_EMAIL", 50, 1, 1_000_000),
    )


def _listener_shard(env: Mapping[str, str], shards: int) -> int:
    raw = _get(env, "SIGHTLINE_LISTENER_SHARD")
    if raw is None:
        # On Heroku, DYNO is "listener.3": dynos are numbered from 1.
        dyno = _get(env, "DYNO") or ""
        name, _, number = dyno.partition(".")
        if name == "listener" and number.isdigit():
            return (int(number) - 1) % shards
        return 0
    return _int(env, "SIGHTLINE_LISTENER_SHARD", 0, 0, shards - 1)


def _document_settings(env: Mapping[str, str], var_dir: Path) -> DocumentSettings:
    raw = _get(env, "SIGHTLINE_DOCUMENT_STORAGE") or "database"
    if raw == "filesystem":
        storage = str(var_dir / "documents")
    elif raw == "database" or raw.startswith("/"):
        storage = raw
    else:
        raise ConfigError(
            "SIGHTLINE_DOCUMENT_STORAGE: expected database, filesystem or an absolute "
            f"folder path, got {raw!r}"
        )
    return DocumentSettings(
        storage=storage,
        max_bytes=_int(env, "SIGHTLINE_DOCUMENT_MAX_MB", 50, 1, 500) * 1024 * 1024,
        max_pages=_int(env, "SIGHTLINE_DOCUMENT_MAX_PAGES", 500, 1, 5000),
        convert_seconds=_int(env, "SIGHTLINE_DOCUMENT_CONVERT_SECONDS", 120, 5, 3600),
        render_seconds=_int(env, "SIGHTLINE_DOCUMENT_RENDER_SECONDS", 600, 5, 7200),
        render_processes=_int(env, "SIGHTLINE_DOCUMENT_RENDER_PROCESSES", 2, 1, 16),
        network_isolation=_isolation(env, "SIGHTLINE_DOCUMENT_NETWORK_ISOLATION"),
        file_isolation=_isolation(env, "SIGHTLINE_DOCUMENT_FILE_ISOLATION"),
    )


def _isolation(env: Mapping[str, str], name: str) -> str:
    raw = (_get(env, name) or "auto").lower()
    if raw not in ("auto", "required", "off"):
        raise ConfigError(f"{name}: expected auto, required or off, got {raw!r}")
    return raw


def _salesforce_login_url(env: Mapping[str, str], domain: str) -> str:
    """Where logins and token grants go: login/test.salesforce.com or a My Domain."""
    raw = _get(env, "SALESFORCE_LOGIN_URL")
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
    key = _get(env, "SALESFORCE_JWT_PRIVATE_KEY")
    name = "SALESFORCE_JWT_PRIVATE_KEY"
    path = _get(env, "SALESFORCE_JWT_PRIVATE_KEY_FILE")
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
    raw = _get(env, "SALESFORCE_JWT_ALLOWED") or ""
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


def _forwarded_allow_ips(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _get(env, "FORWARDED_ALLOW_IPS") or ("*" if _get(env, "DYNO") else "127.0.0.1")
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


def _allowed_networks(
    env: Mapping[str, str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """SIGHTLINE_ALLOWED_NETWORKS: comma-separated CIDRs (or single addresses) teams may reach."""
    raw = _get(env, "SIGHTLINE_ALLOWED_NETWORKS") or ""
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


def _url(env: Mapping[str, str], name: str, default: str, *, https_only: bool = False) -> str:
    raw = _get(env, name)
    if raw is None:
        return default
    parts = urlsplit(raw)
    schemes = ("https",) if https_only else ("http", "https")
    if parts.scheme not in schemes or not parts.netloc:
        expected = "https://host/..." if https_only else "http(s)://host/..."
        raise ConfigError(f"{name}: expected {expected}, got {raw!r}")
    return raw


def _push_service_account(
    env: Mapping[str, str], topic: str | None, production: bool
) -> str | None:
    """The account Pub/Sub push tokens must name; required in production with push on.

    Without it any Google-signed token for our audience would pass: anyone can have
    Google sign one in their own project (worker.sync.gmail.verify_push_token).
    """
    account = _get(env, "GMAIL_PUSH_SERVICE_ACCOUNT")
    if account is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", account):
        raise ConfigError(
            "GMAIL_PUSH_SERVICE_ACCOUNT: expected the push subscription's service account, "
            f"e.g. push@<project>.iam.gserviceaccount.com, got {account!r}"
        )
    if account is None and topic is not None:
        if production:
            raise ConfigError(
                "GMAIL_PUSH_SERVICE_ACCOUNT: required with GMAIL_PUBSUB_TOPIC when "
                "SIGHTLINE_ENV=production (the service account your Pub/Sub push "
                "subscription authenticates as)"
            )
        log.warning(
            "gmail_push_service_account_unset: any Google-signed push token for this "
            "audience is accepted (development only; production refuses to start)"
        )
    return account


def _mail_providers(
    env: Mapping[str, str], public_base_url: str, *, production: bool = False
) -> MailProviderSettings:
    google_id, google_secret = _get(env, "GOOGLE_CLIENT_ID"), _get(env, "GOOGLE_CLIENT_SECRET")
    if bool(google_id) != bool(google_secret):
        raise ConfigError(
            "GOOGLE_CLIENT_SECRET: GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET go together"
        )
    topic = _get(env, "GMAIL_PUBSUB_TOPIC")
    if topic is not None and not re.fullmatch(r"projects/[^/\s]+/topics/[^/\s]+", topic):
        raise ConfigError(
            f"GMAIL_PUBSUB_TOPIC: expected projects/<project>/topics/<topic>, got {topic!r}"
        )
    push_token = _get(env, "GMAIL_PUSH_TOKEN")
    if push_token is not None and len(push_token) < 24:
        raise ConfigError("GMAIL_PUSH_TOKEN: must be at least 24 characters (use a random value)")
    ms_id, ms_secret = _get(env, "MICROSOFT_CLIENT_ID"), _get(env, "MICROSOFT_CLIENT_SECRET")
    if bool(ms_id) != bool(ms_secret):
        raise ConfigError(
            "MICROSOFT_CLIENT_SECRET: MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET go together"
        )
    authority = _url(
        env, "MICROSOFT_AUTHORITY", "https://login.microsoftonline.com/common", https_only=True
    )
    if len([p for p in urlsplit(authority).path.split("/") if p]) != 1:
        raise ConfigError(
            "MICROSOFT_AUTHORITY: expected https://login.microsoftonline.com/<tenant or common>, "
            f"got {authority!r}"
        )
    api_endpoint = _url(env, "GMAIL_API_ENDPOINT", "https://gmail.googleapis.com/")
    return MailProviderSettings(
        google_client_id=google_id,
        google_client_secret=google_secret,
        google_auth_uri=_url(env, "GOOGLE_AUTH_URI", "https://accounts.google.com/o/oauth2/auth"),
        google_token_uri=_url(env, "GOOGLE_TOKEN_URI", "https://oauth2.googleapis.com/token"),
        google_revoke_uri=_url(env, "GOOGLE_REVOKE_URI", "https://oauth2.googleapis.com/revoke"),
        gmail_api_endpoint=api_endpoint.rstrip("/") + "/",
        gmail_pubsub_topic=topic,
        gmail_push_audience=_get(env, "GMAIL_PUSH_AUDIENCE") or f"{public_base_url}/webhooks/gmail",
        gmail_push_service_account=_push_service_account(env, topic, production),
        gmail_push_token=push_token,
        gmail_push_certs_url=_url(
            env, "GMAIL_PUSH_CERTS_URL", "https://www.googleapis.com/oauth2/v1/certs"
        ),
        microsoft_client_id=ms_id,
        microsoft_client_secret=ms_secret,
        microsoft_authority=authority.rstrip("/"),
        graph_endpoint=_url(
            env, "MICROSOFT_GRAPH_ENDPOINT", "https://graph.microsoft.com/v1.0"
        ).rstrip("/"),
        graph_notification_url=_url(
            env, "GRAPH_NOTIFICATION_URL", f"{public_base_url}/webhooks/graph", https_only=False
        ),
        exchange_stream_minutes=_int(env, "SIGHTLINE_EXCHANGE_STREAM_MINUTES", 29, 1, 30),
        push_poll_seconds=_int(env, "SIGHTLINE_PUSH_POLL_SECONDS", 1800, 5, 86400),
    )


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting. Raises ConfigError naming the variable."""
    env = os.environ if env is None else env
    raw_env = _get(env, "SIGHTLINE_ENV") or ("production" if _get(env, "DYNO") else "development")
    if raw_env not in ENVIRONMENTS:
        raise ConfigError(
            f"SIGHTLINE_ENV: expected one of {', '.join(ENVIRONMENTS)}, got {raw_env!r}"
        )
    production = raw_env == "production"

    var_dir = Path(_get(env, "SIGHTLINE_VAR_DIR") or PROJECT_ROOT / "var").resolve()
    port = _int(env, "PORT", 5000, 1, 65535)

    if production:
        for required in (
            "DATABASE_URL",
            "REDIS_URL",
            "SECRET_KEY",
            "SIGHTLINE_ENCRYPTION_KEY",
            "PUBLIC_BASE_URL",
        ):
            if _get(env, required) is None:
                raise ConfigError(f"{required}: required when SIGHTLINE_ENV=production")

    secret_key = _get(env, "SECRET_KEY")
    if secret_key is None:
        secret_key = _keep_local_secret(var_dir / "secret_key", lambda: secrets.token_urlsafe(48))
    if len(secret_key) < 32:
        raise ConfigError("SECRET_KEY: must be at least 32 characters (use a random value)")

    raw_keys = _get(env, "SIGHTLINE_ENCRYPTION_KEY")
    if raw_keys is None:
        raw_keys = _keep_local_secret(
            var_dir / "encryption_key", lambda: Fernet.generate_key().decode()
        )
    encryption_keys = _fernet_keys(raw_keys)

    redis_url, redis_embedded = _redis_url(_get(env, "REDIS_URL"), var_dir)
    log_level = (_get(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL: expected DEBUG, INFO, WARNING or ERROR, got {log_level!r}")

    sf_instance = _get(env, "SALESFORCE_INSTANCE_URL")
    if sf_instance is not None and not sf_instance.startswith(("https://", "http://")):
        raise ConfigError(f"SALESFORCE_INSTANCE_URL: expected https://..., got {sf_instance!r}")
    sf_domain = _get(env, "SALESFORCE_DOMAIN") or "login"
    sf_login_url = _salesforce_login_url(env, sf_domain)
    sf_client_id = _get(env, "SALESFORCE_CLIENT_ID")
    sf_jwt_key = _jwt_private_key(env)
    salesforce = SalesforceSettings(
        instance_url=sf_instance.rstrip("/") if sf_instance else None,
        access_token=_get(env, "SALESFORCE_ACCESS_TOKEN"),
        username=_get(env, "SALESFORCE_USERNAME"),
        password=_get(env, "SALESFORCE_PASSWORD"),
        security_token=_get(env, "SALESFORCE_SECURITY_TOKEN"),
        domain=sf_domain,
        api_version=_get(env, "SALESFORCE_API_VERSION") or "62.0",
        task_key_field=_get(env, "SALESFORCE_TASK_KEY_FIELD") or "Sightline_Key__c",
        task_status=_get(env, "SALESFORCE_TASK_STATUS") or "Completed",
        login_url=sf_login_url,
        client_id=sf_client_id,
        client_secret=_get(env, "SALESFORCE_CLIENT_SECRET"),
        jwt_private_key=sf_jwt_key,
        jwt_username=_get(env, "SALESFORCE_JWT_USERNAME"),
        jwt_allowed=_jwt_allowed(env, can_sign=bool(sf_client_id and sf_jwt_key)),
        engagement_debounce_seconds=_int(
            env, "SIGHTLINE_SALESFORCE_ENGAGEMENT_DEBOUNCE_SECONDS", 300, 0, 86400
        ),
        park_seconds=_int(env, "SIGHTLINE_SALESFORCE_PARK_SECONDS", 900, 1, 86400),
        retry_base_seconds=_int(env, "SIGHTLINE_SALESFORCE_RETRY_BASE_SECONDS", 15, 1, 3600),
        timeout_seconds=_int(env, "SIGHTLINE_SALESFORCE_TIMEOUT_SECONDS", 60, 1, 600),
        bulk_threshold=_int(env, "SIGHTLINE_SALESFORCE_BULK_THRESHOLD", 2000, 201, 10_000_000),
        who_retry_seconds=_int(env, "SIGHTLINE_SALESFORCE_WHO_RETRY_SECONDS", 3600, 1, 7 * 86400),
        # A team is flushed when a full batch is due or its oldest due row has waited
        # this long: fewer, fuller calls. Default: ten cron ticks (5 minutes).
        batch_seconds=_int(
            env,
            "SIGHTLINE_SALESFORCE_BATCH_SECONDS",
            10 * _int(env, "SIGHTLINE_SALESFORCE_FLUSH_SECONDS", 30, 1, 3600),
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

    shards = _int(env, "SIGHTLINE_LISTENER_SHARDS", 1, 1, 1024)
    return Settings(
        env=raw_env,
        var_dir=var_dir,
        database_url=_database_url(_get(env, "DATABASE_URL"), var_dir),
        redis_url=redis_url,
        redis_embedded=redis_embedded,
        redis_tls_verify=_bool(env, "REDIS_TLS_VERIFY", True),
        secret_key=secret_key,
        encryption_keys=encryption_keys,
        public_base_url=_public_base_url(_get(env, "PUBLIC_BASE_URL"), port),
        port=port,
        log_level=log_level,
        salesforce=salesforce,
        sync_poll_seconds=_int(env, "SIGHTLINE_SYNC_POLL_SECONDS", 60, 5, 86400),
        sequence_tick_seconds=_int(env, "SIGHTLINE_SEQUENCE_TICK_SECONDS", 10, 1, 3600),
        slow_push_poll_seconds=_int(env, "SIGHTLINE_SLOW_PUSH_POLL_SECONDS", 15, 5, 3600),
        fresh_seconds=_int(env, "SIGHTLINE_FRESH_SECONDS", 30, 5, 3600),
        salesforce_flush_seconds=_int(env, "SIGHTLINE_SALESFORCE_FLUSH_SECONDS", 30, 1, 3600),
        salesforce_lease_seconds=_int(env, "SIGHTLINE_SALESFORCE_LEASE_SECONDS", 600, 5, 86400),
        send_recovery_seconds=_int(env, "SIGHTLINE_SEND_RECOVERY_SECONDS", 300, 5, 86400),
        listener_shards=shards,
        listener_shard=_listener_shard(env, shards),
        providers=_mail_providers(
            env, _public_base_url(_get(env, "PUBLIC_BASE_URL"), port), production=production
        ),
        max_inbound_bytes=_int(
            env, "SIGHTLINE_MAX_INBOUND_BYTES", 25 * 1024 * 1024, 1024, 200 * 1024 * 1024
        ),
        documents=_document_settings(env, var_dir),
        web_concurrency=_int(env, "WEB_CONCURRENCY", 2, 1, 64),
        forwarded_allow_ips=_forwarded_allow_ips(env),
        tracking_self_window_hours=_int(
            env, "SIGHTLINE_TRACKING_SELF_WINDOW_HOURS", 168, 0, 24 * 365
        ),
        tracking_scanner_seconds=_int(env, "SIGHTLINE_TRACKING_SCANNER_SECONDS", 10, 0, 3600),
        tracking_pii_days=_int(env, "SIGHTLINE_TRACKING_PII_DAYS", 7, 1, 3650),
        auto_reply_pause_seconds=_int(
            env, "SIGHTLINE_AUTO_REPLY_PAUSE_SECONDS", 3 * 86400, 1, 90 * 86400
        ),
        auto_reply_max_pause_days=_int(env, "SIGHTLINE_AUTO_REPLY_MAX_PAUSE_DAYS", 90, 1, 365),
        soft_bounce_limit=_int(env, "SIGHTLINE_SOFT_BOUNCE_LIMIT", 3, 1, 20),
        soft_bounce_window_days=_int(env, "SIGHTLINE_SOFT_BOUNCE_WINDOW_DAYS", 7, 1, 90),
        soft_bounce_retry_seconds=_int(
            env, "SIGHTLINE_SOFT_BOUNCE_RETRY_SECONDS", 4 * 3600, 1, 7 * 86400
        ),
        classify_budget_ms=_int(env, "SIGHTLINE_CLASSIFY_BUDGET_MS", 1500, 10, 600_000),
        secret_key_fallbacks=_secret_key_fallbacks(env, secret_key),
        signin_limits=_signin_limits(env),
        allowed_networks=_allowed_networks(env),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use."""
    return load_settings()
