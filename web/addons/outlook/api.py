"""API v1's operations for the Outlook pane's own sign-in: who it is, and signing out.

``GET /api/v1/outlook/session`` says whom the bearer speaks for (the pane's header
shows it; a 401 tells the pane to sign in again). ``DELETE`` signs the pane out:
an add-in token is revoked at once (`web.addons.outlook.tokens.revoke`); an API
token is left alone (it is revoked with ``flask --app web tokens revoke``, and a
pane must never be able to end an integration's token by accident).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import g
from flask.typing import ResponseReturnValue
from pydantic import BaseModel

from core.models import Team
from web.addons.outlook import tokens
from web.addons.outlook.bearer import addin_or_api_token
from web.api.operations import operation
from web.db import db

log = logging.getLogger(__name__)


class SessionOut(BaseModel):
    email: str
    name: str | None
    team: str
    # When the add-in token stops working (the pane asks to sign in again); null for an API token.
    expires_at: datetime | None


@operation(
    "GET",
    "/outlook/session",
    summary="Whom the Outlook pane's bearer speaks for",
    response=SessionOut,
)
@addin_or_api_token
def outlook_session() -> ResponseReturnValue:
    claims: tokens.AddinToken | None = g.addin_token
    expires = None if claims is None else datetime.fromtimestamp(claims.expires_at, UTC)
    team = db().get_one(Team, g.team_id)
    out = SessionOut(email=g.user.email, name=g.user.name, team=team.name, expires_at=expires)
    return out.model_dump(mode="json")


@operation(
    "DELETE",
    "/outlook/session",
    summary="Sign the Outlook pane out (revokes its add-in token)",
    status=204,
)
@addin_or_api_token
def outlook_signout() -> ResponseReturnValue:
    claims: tokens.AddinToken | None = g.addin_token
    if claims is not None:
        tokens.revoke(claims)
        log.info("outlook_addin_signed_out user_id=%s team_id=%s", g.user.id, g.team_id)
    return "", 204
