"""The Outlook add-in's bearer token: short-lived, signed, scoped to one user and team.

Why not the session cookie: the task pane runs in an iframe inside Outlook on the
web (a third-party frame), where browsers partition or block our cookies. So the
pane signs in once through a dialog (`Office.context.ui.displayDialogAsync`: a
top-level window of our own, where the session works), the dialog hands the pane
one of these tokens (`messageParent`), and the pane sends it as
``Authorization: Bearer slo_…`` to the API operations that accept it.

Why not an API token: those live until revoked and open the whole API. This one

- is an itsdangerous timed signature over ``{"u": user id, "t": team id, "j": a
  random id}`` (salt ``sightline.outlook-addin``), signed with ``SECRET_KEY`` and
  checked against ``SECRET_KEY_FALLBACKS`` too, so a key rotation signs nobody out
  early;
- expires after `LIFETIME` (a working day), after which the pane asks to sign in again;
- is revoked by signing out of the pane: its random id is kept in Redis until the
  token would have expired anyway (`revoke`), and `verify` refuses it from then on;
- names a user who must still exist, not be removed, and belong to the team it
  names; and
- is accepted only by the operations that say so (`web.addons.outlook.bearer`),
  never by the rest of the API.

Must never: log a token, or accept one whose signature, age, user, team or
revocation does not check out.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from config import get_settings
from core.models import User
from core.redis import get_redis

PREFIX = "slo_"
LIFETIME_SECONDS = 12 * 3600
_SALT = "sightline.outlook-addin"
_REVOKED_KEY = "sightline:outlook:revoked:{}"


@dataclass(frozen=True)
class AddinToken:
    """What a valid token names."""

    user_id: int
    team_id: int
    token_id: str
    issued_at: int  # Unix seconds

    @property
    def expires_at(self) -> int:
        return self.issued_at + LIFETIME_SECONDS


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(get_settings().signing_keys, salt=_SALT)


def issue(user: User) -> str:
    """A new token for `user` in their team."""
    payload = {"u": user.id, "t": user.team_id, "j": secrets.token_urlsafe(16)}
    return PREFIX + _serializer().dumps(payload)


def looks_like(token: str) -> bool:
    """Whether a bearer is one of ours (else it may be an API token)."""
    return token.startswith(PREFIX)


def read(token: str) -> AddinToken | None:
    """The token's claims if its signature and age check out, else None (nothing else is read)."""
    if not looks_like(token):
        return None
    try:
        payload, signed_at = _serializer().loads(
            token[len(PREFIX) :], max_age=LIFETIME_SECONDS, return_timestamp=True
        )
    except (SignatureExpired, BadSignature):
        return None
    if not isinstance(payload, dict):
        return None
    user_id, team_id, token_id = payload.get("u"), payload.get("t"), payload.get("j")
    if not (isinstance(user_id, int) and isinstance(team_id, int) and isinstance(token_id, str)):
        return None
    return AddinToken(user_id, team_id, token_id, int(signed_at.timestamp()))


def is_revoked(claims: AddinToken) -> bool:
    return bool(get_redis().exists(_REVOKED_KEY.format(claims.token_id)))


def verify(session: Session, token: str) -> User | None:
    """The user the token speaks for, or None: bad, expired, revoked, or the user left the team."""
    claims = read(token)
    if claims is None or is_revoked(claims):
        return None
    user = session.get(User, claims.user_id)
    if user is None or user.team_id != claims.team_id or user.removed_at is not None:
        return None
    return user


def revoke(claims: AddinToken) -> None:
    """Refuse this token from now on (kept only as long as it could still be used)."""
    remaining = max(1, claims.expires_at - int(time.time()) + 60)
    get_redis().set(_REVOKED_KEY.format(claims.token_id), "1", ex=remaining)
