"""API bearer tokens and signed URL tokens.

API tokens are random, shown once, and stored only as a SHA-256 digest (a fast
hash is right here: the token has 256 bits of entropy, unlike a password).

Signed tokens (itsdangerous, keyed by SECRET_KEY with a per-purpose salt) carry
ids in URLs so a hot endpoint can trust them without a database read. They are
signed with SECRET_KEY and checked against it and every key in
SECRET_KEY_FALLBACKS, so links in emails sent before a key rotation keep working.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session

from config import get_settings
from core.models import ApiToken, utcnow

API_TOKEN_PREFIX = "sl_"  # noqa: S105 - a visible prefix, not a secret
DISPLAY_PREFIX_LENGTH = 10  # what is kept in the clear to name a token: 7 of its random characters


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_prefix(token: str) -> str:
    return token[:DISPLAY_PREFIX_LENGTH]


TOKEN_NAME_LIMIT = 100


def add_api_token(session: Session, user_id: int, name: str | None = None) -> tuple[str, ApiToken]:
    """A new API token for the user: (the token, to show once; its stored row).

    What `flask --app web tokens create` and the Account page both call.
    """
    token = new_api_token()
    row = ApiToken(
        user_id=user_id, token_hash=hash_api_token(token), prefix=display_prefix(token), name=name
    )
    session.add(row)
    session.flush()
    return token, row


def revoke_api_token(row: ApiToken) -> bool:
    """Revoke `row` from the next request on; False when it already was."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True


def _serializer(purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(get_settings().signing_keys, salt=f"sightline.{purpose}")


def sign(purpose: str, payload: Any) -> str:
    return _serializer(purpose).dumps(payload)


def unsign(purpose: str, token: str) -> Any | None:
    """The payload, or None for a forged, truncated or mangled token."""
    try:
        return _serializer(purpose).loads(token)
    except BadSignature:
        return None
