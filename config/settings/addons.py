"""The Gmail add-on's settings: who may call it, and whose keys sign the calls.

Google calls the add-on's endpoints with an ID token of the deployment's service
account (`service-<project number>@gcp-sa-gsuiteaddons.iam.gserviceaccount.com`)
and, in the body, the Gmail user's own ID token, issued to the add-on's OAuth
client. Both values come from the Cloud project (`gcloud workspace-add-ons
get-authorization`: `serviceAccountEmail`, `oauthClientId`). Until both are set
the endpoints refuse every call: anyone can have Google sign an ID token for our
URL from a project of their own, so a token is only ours when it names that
service account.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from config.settings.parsing import ConfigError, env_str, env_url

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
DEFAULT_NAME = "Sightline"
_ACCOUNT = re.compile(r"[^@\s]+@[^@\s]+\.gserviceaccount\.com")
_CLIENT_ID = re.compile(r"[0-9A-Za-z._-]{1,200}")


@dataclass(frozen=True)
class GmailAddonSettings:
    """GMAIL_ADDON_*: the deployment's service account and OAuth client, the certs URL."""

    service_account: str | None = None
    oauth_client_id: str | None = None
    # Google's ID-token certificates ({kid: PEM}); tests point it at a fake Google.
    certs_url: str = GOOGLE_CERTS_URL
    name: str = DEFAULT_NAME
    logo_url: str | None = None  # None: the logo the web app serves, /addons/gmail/logo.png

    @property
    def configured(self) -> bool:
        return bool(self.service_account and self.oauth_client_id)


def read_gmail_addon(env: Mapping[str, str]) -> GmailAddonSettings:
    account = env_str(env, "GMAIL_ADDON_SERVICE_ACCOUNT")
    if account is not None and not _ACCOUNT.fullmatch(account):
        raise ConfigError(
            "GMAIL_ADDON_SERVICE_ACCOUNT: expected the add-on's service account, "
            f"service-<project number>@gcp-sa-gsuiteaddons.iam.gserviceaccount.com, got {account!r}"
        )
    client_id = env_str(env, "GMAIL_ADDON_OAUTH_CLIENT_ID")
    if client_id is not None and not _CLIENT_ID.fullmatch(client_id):
        raise ConfigError(
            f"GMAIL_ADDON_OAUTH_CLIENT_ID: expected an OAuth client id, got {client_id!r}"
        )
    name = env_str(env, "GMAIL_ADDON_NAME") or DEFAULT_NAME
    if len(name) > 50:
        raise ConfigError("GMAIL_ADDON_NAME: at most 50 characters")
    logo = env_str(env, "GMAIL_ADDON_LOGO_URL")
    return GmailAddonSettings(
        service_account=account,
        oauth_client_id=client_id,
        certs_url=env_url(env, "GMAIL_ADDON_CERTS_URL", GOOGLE_CERTS_URL),
        name=name,
        logo_url=env_url(env, "GMAIL_ADDON_LOGO_URL", logo, https_only=True) if logo else None,
    )
