"""Provider credentials encrypted at rest with Fernet.

`SIGHTLINE_ENCRYPTION_KEY` holds one or more keys, comma-separated, newest
first. Encryption always uses the first; decryption tries each (MultiFernet), so
a key can be rotated without losing a mailbox: put the new key first, run
`flask --app web rotate-credentials`, then drop the old key.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from config import get_settings


class CredentialsError(Exception):
    """Stored credentials cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def _current() -> MultiFernet:
    return _fernet(get_settings().encryption_keys)


def encrypt_json(value: dict[str, Any]) -> str:
    return _current().encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()


def decrypt_json(token: str) -> dict[str, Any]:
    try:
        plain = _current().decrypt(token.encode())
    except InvalidToken:
        raise CredentialsError(
            "stored credentials cannot be decrypted: SIGHTLINE_ENCRYPTION_KEY has changed "
            "without keeping the old key"
        ) from None
    value = json.loads(plain)
    if not isinstance(value, dict):
        raise CredentialsError("stored credentials are not a JSON object")
    return value


def rotate(token: str) -> str:
    """Re-encrypt under the newest key. Raises CredentialsError if no key opens `token`."""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialsError(
            "stored credentials cannot be decrypted with any key in SIGHTLINE_ENCRYPTION_KEY"
        ) from None
