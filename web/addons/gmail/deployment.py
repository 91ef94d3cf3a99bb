"""The add-on's deployment descriptor, and `flask --app web gmail-addon deployment` that prints it.

Google's HTTP runtime takes a Deployment resource (`gcloud workspace-add-ons
deployments create NAME --deployment-file=FILE`): the OAuth scopes users
grant, and the URLs Google calls for each trigger. Everything in it follows
from PUBLIC_BASE_URL and the GMAIL_ADDON_* settings, so it is printed rather
than kept in the repository.

Scopes, the fewest that do the job:

    gmail.addons.execute                     run as a Gmail add-on at all
    gmail.addons.current.message.metadata    the open message's From/To/Cc (and the
                                             compose trigger's draft recipients)
    gmail.addons.current.action.compose      insert links and the pixel into a draft
    userinfo.email                           the user's verified email: who they are
    script.locale                            the user's time zone, for the times shown
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask.cli import AppGroup

from config import get_settings
from web.addons.gmail.routes import PREFIX

SCOPES = (
    "https://www.googleapis.com/auth/gmail.addons.execute",
    "https://www.googleapis.com/auth/gmail.addons.current.message.metadata",
    "https://www.googleapis.com/auth/gmail.addons.current.action.compose",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/script.locale",
)
LOGO_PATH = "/static/gmail-addon-logo.png"
PRIMARY_COLOR = "#1f5fbf"  # the web app's blue (web/static/app.css)

gmail_addon = AppGroup("gmail-addon", help="The Gmail add-on: its deployment descriptor.")


def descriptor() -> dict[str, Any]:
    """The Deployment resource (projects.deployments) for this PUBLIC_BASE_URL."""
    settings = get_settings()
    root = settings.public_base_url
    base = root + PREFIX
    logo = settings.gmail_addon.logo_url or root + LOGO_PATH
    return {
        "oauthScopes": list(SCOPES),
        "addOns": {
            "common": {
                "name": settings.gmail_addon.name,
                "logoUrl": logo,
                "layoutProperties": {"primaryColor": PRIMARY_COLOR},
                "useLocaleFromApp": True,
                "homepageTrigger": {"runFunction": f"{base}/homepage"},
            },
            "gmail": {
                "contextualTriggers": [
                    {"unconditional": {}, "onTriggerFunction": f"{base}/message"}
                ],
                "composeTrigger": {
                    "actions": [
                        {
                            "runFunction": f"{base}/compose",
                            "label": f"{settings.gmail_addon.name}: insert content",
                            "logoUrl": logo,
                        }
                    ],
                    "draftAccess": "METADATA",
                },
            },
            "httpOptions": {"authorizationHeader": "SYSTEM_ID_TOKEN"},
        },
    }


@gmail_addon.command("deployment")
def print_deployment() -> None:
    """Print the deployment descriptor for `gcloud workspace-add-ons deployments create`."""
    settings = get_settings()
    if not settings.public_base_url.startswith("https://"):
        click.echo(
            f"warning: PUBLIC_BASE_URL is {settings.public_base_url}: Google calls add-ons "
            "only over https, so set the address Google can reach",
            err=True,
        )
    if not settings.gmail_addon.configured:
        click.echo(
            "warning: GMAIL_ADDON_SERVICE_ACCOUNT and GMAIL_ADDON_OAUTH_CLIENT_ID are not both "
            "set: the endpoints refuse every call until they are "
            "(gcloud workspace-add-ons get-authorization shows both)",
            err=True,
        )
    json.dump(descriptor(), sys.stdout, indent=2)
    sys.stdout.write("\n")
