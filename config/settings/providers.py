"""Mail provider settings: Gmail (Google OAuth, Pub/Sub push), Microsoft 365, Exchange.

`read_mail_providers` checks that client ids and secrets come in pairs, that
endpoints are URLs, and that Gmail push names the service account its tokens
must come from (required in production; a warning in development).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from config.settings.parsing import ConfigError, env_int, env_str, env_url

log = logging.getLogger(__name__)

DEFAULT_SKIP_FOLDERS = ("Sent", "Drafts", "Trash", "Junk")
_MAX_FOLDER_NAME = 200


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
    # How often Exchange writes to an idle stream (a keep-alive); a stream silent for
    # twice this is taken as dead (worker.sync.exchange_stream).
    exchange_keepalive_seconds: int = 45
    # How often a mailbox whose push is live is polled anyway (the backstop).
    push_poll_seconds: int = 1800
    # A reply without threading headers on IMAP is matched by subject to what this
    # mailbox sent its sender within this many days (worker.matching.threads).
    subject_match_days: int = 30
    # Folders never synced nor watched: role words (sent, drafts, trash, junk/spam)
    # name the provider's special folder, anything else a folder by name
    # (worker.sync.folders). A mailbox's credentials may carry its own list.
    skip_folders: tuple[str, ...] = DEFAULT_SKIP_FOLDERS

    @property
    def google_configured(self) -> bool:
        return bool(self.google_client_id and self.google_client_secret)

    @property
    def microsoft_configured(self) -> bool:
        return bool(self.microsoft_client_id and self.microsoft_client_secret)


# What the operator sets to offer each OAuth provider (the Mailboxes page names them).
GOOGLE_OAUTH_VARIABLES = ("GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET")
MICROSOFT_OAUTH_VARIABLES = ("MICROSOFT_CLIENT_ID", "MICROSOFT_CLIENT_SECRET")


def read_mail_providers(
    env: Mapping[str, str], public_base_url: str, *, production: bool = False
) -> MailProviderSettings:
    google_id, google_secret = (
        env_str(env, "GOOGLE_CLIENT_ID"),
        env_str(env, "GOOGLE_CLIENT_SECRET"),
    )
    if bool(google_id) != bool(google_secret):
        raise ConfigError(
            "GOOGLE_CLIENT_SECRET: GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET go together"
        )
    topic = env_str(env, "GMAIL_PUBSUB_TOPIC")
    if topic is not None and not re.fullmatch(r"projects/[^/\s]+/topics/[^/\s]+", topic):
        raise ConfigError(
            f"GMAIL_PUBSUB_TOPIC: expected projects/<project>/topics/<topic>, got {topic!r}"
        )
    push_token = env_str(env, "GMAIL_PUSH_TOKEN")
    if push_token is not None and len(push_token) < 24:
        raise ConfigError("GMAIL_PUSH_TOKEN: must be at least 24 characters (use a random value)")
    ms_id, ms_secret = env_str(env, "MICROSOFT_CLIENT_ID"), env_str(env, "MICROSOFT_CLIENT_SECRET")
    if bool(ms_id) != bool(ms_secret):
        raise ConfigError(
            "MICROSOFT_CLIENT_SECRET: MICROSOFT_CLIENT_ID and MICROSOFT_CLIENT_SECRET go together"
        )
    authority = env_url(
        env, "MICROSOFT_AUTHORITY", "https://login.microsoftonline.com/common", https_only=True
    )
    if len([p for p in urlsplit(authority).path.split("/") if p]) != 1:
        raise ConfigError(
            "MICROSOFT_AUTHORITY: expected https://login.microsoftonline.com/<tenant or common>, "
            f"got {authority!r}"
        )
    api_endpoint = env_url(env, "GMAIL_API_ENDPOINT", "https://gmail.googleapis.com/")
    return MailProviderSettings(
        google_client_id=google_id,
        google_client_secret=google_secret,
        google_auth_uri=env_url(
            env, "GOOGLE_AUTH_URI", "https://accounts.google.com/o/oauth2/auth"
        ),
        google_token_uri=env_url(env, "GOOGLE_TOKEN_URI", "https://oauth2.googleapis.com/token"),
        google_revoke_uri=env_url(env, "GOOGLE_REVOKE_URI", "https://oauth2.googleapis.com/revoke"),
        gmail_api_endpoint=api_endpoint.rstrip("/") + "/",
        gmail_pubsub_topic=topic,
        gmail_push_audience=env_str(env, "GMAIL_PUSH_AUDIENCE")
        or f"{public_base_url}/webhooks/gmail",
        gmail_push_service_account=_push_service_account(env, topic, production),
        gmail_push_token=push_token,
        gmail_push_certs_url=env_url(
            env, "GMAIL_PUSH_CERTS_URL", "https://www.googleapis.com/oauth2/v1/certs"
        ),
        microsoft_client_id=ms_id,
        microsoft_client_secret=ms_secret,
        microsoft_authority=authority.rstrip("/"),
        graph_endpoint=env_url(
            env, "MICROSOFT_GRAPH_ENDPOINT", "https://graph.microsoft.com/v1.0"
        ).rstrip("/"),
        graph_notification_url=env_url(
            env, "GRAPH_NOTIFICATION_URL", f"{public_base_url}/webhooks/graph", https_only=False
        ),
        exchange_stream_minutes=env_int(env, "SIGHTLINE_EXCHANGE_STREAM_MINUTES", 29, 1, 30),
        exchange_keepalive_seconds=env_int(env, "SIGHTLINE_EXCHANGE_KEEPALIVE_SECONDS", 45, 1, 45),
        push_poll_seconds=env_int(env, "SIGHTLINE_PUSH_POLL_SECONDS", 1800, 5, 86400),
        subject_match_days=env_int(env, "SIGHTLINE_SUBJECT_MATCH_DAYS", 30, 1, 365),
        skip_folders=read_skip_folders(env),
    )


def read_skip_folders(env: Mapping[str, str]) -> tuple[str, ...]:
    """SIGHTLINE_SKIP_FOLDERS: comma-separated folder names; "" syncs every folder.

    Unset: Sent, Drafts, Trash and Junk.
    """
    raw = env.get("SIGHTLINE_SKIP_FOLDERS")
    if raw is None:
        return DEFAULT_SKIP_FOLDERS
    names = [part.strip() for part in raw.split(",")]
    if raw.strip() == "":
        return ()
    for name in names:
        if not name:
            raise ConfigError(
                "SIGHTLINE_SKIP_FOLDERS: an empty name between commas "
                f"(expected e.g. Sent,Drafts,Trash,Junk), got {raw!r}"
            )
        if len(name) > _MAX_FOLDER_NAME or any(ord(c) < 32 for c in name):
            raise ConfigError(
                f"SIGHTLINE_SKIP_FOLDERS: {name[:40]!r} is not a folder name "
                f"(at most {_MAX_FOLDER_NAME} printable characters)"
            )
    return tuple(dict.fromkeys(names))


def _push_service_account(
    env: Mapping[str, str], topic: str | None, production: bool
) -> str | None:
    """The account Pub/Sub push tokens must name; required in production with push on.

    Without it any Google-signed token for our audience would pass: anyone can have
    Google sign one in their own project (worker.sync.gmail_push.verify_push_token).
    """
    account = env_str(env, "GMAIL_PUSH_SERVICE_ACCOUNT")
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
