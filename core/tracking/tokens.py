"""Signed tracking tokens and the device cookie.

Every token is signed with SECRET_KEY (itsdangerous, one salt per purpose), so
the web edge trusts what it names without a database read, and anything forged,
truncated or mangled reads as None. Former keys (SECRET_KEY_FALLBACKS) still
verify: the pixel and links of an email sent before a rotation keep counting.

- Open token: ``[sent message id, team id, recipient index, issued at]``.
- Click token: the same, plus the link's index in the body and its destination
  URL. The destination is *only* ever taken from here: there is no unsigned
  parameter a third party could point elsewhere (no open redirect).
- Device cookie: ``[device public id, team id, user id]``, set on sign-in.
- Unsubscribe token: ``[team id, address]`` (the address lower-cased), encrypted
  and authenticated (AES-SIV, its key derived from SECRET_KEY and each fallback;
  deterministic, so the header and ``{{unsubscribe_link}}`` are one link).
  It names the address because the opt-out is about the person, not one message;
  the authentication is what stops anyone unsubscribing an address they only
  guess (no database id to walk), and the encryption keeps the address out of
  the URL, which ends up in routers' logs like the others. It never expires: an
  old email's link must still work.

The recipient is an index into the sent message's `to_addrs + cc_addrs`, so a
URL names a person without spelling out their address (URLs end up in logs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from itsdangerous import BadData, URLSafeSerializer

from config import get_settings

OPEN_SALT = "sightline.track.open"
CLICK_SALT = "sightline.track.click"
DEVICE_SALT = "sightline.device"
UNSUBSCRIBE_SALT = "sightline.unsubscribe"
# A page-made confirmation, so a one-click POST and the confirm page's button differ.
UNSUBSCRIBE_CONFIRM_SALT = "sightline.unsubscribe.confirm"
DEVICE_COOKIE = "sl_device"
MAX_URL_LENGTH = 4096


@dataclass(frozen=True)
class OpenToken:
    sent_message_id: int
    team_id: int
    recipient: int
    issued_at: int  # unix seconds, when the message was handed to its provider


@dataclass(frozen=True)
class ClickToken(OpenToken):
    link: int
    url: str


@dataclass(frozen=True)
class DeviceRef:
    device_id: str
    team_id: int
    user_id: int


@dataclass(frozen=True)
class UnsubscribeRef:
    team_id: int
    email: str


@lru_cache(maxsize=8)
def _serializer(keys: tuple[str, ...], salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(list(keys), salt=salt)


def _signer(salt: str) -> URLSafeSerializer:
    return _serializer(tuple(get_settings().signing_keys), salt)


def _loads(salt: str, token: str) -> Any:
    try:
        return _signer(salt).loads(token)
    except (BadData, ValueError, UnicodeError):
        return None


def _ints(values: list[Any]) -> bool:
    return all(type(v) is int and v >= 0 for v in values)


def open_token(sent_message_id: int, team_id: int, recipient: int, issued_at: int) -> str:
    return str(_signer(OPEN_SALT).dumps([sent_message_id, team_id, recipient, issued_at]))


def click_token(
    sent_message_id: int, team_id: int, recipient: int, issued_at: int, link: int, url: str
) -> str:
    return str(
        _signer(CLICK_SALT).dumps([sent_message_id, team_id, recipient, issued_at, link, url])
    )


def read_open_token(token: str) -> OpenToken | None:
    """The token's contents, or None for anything not signed by us as an open token."""
    payload = _loads(OPEN_SALT, token)
    if not isinstance(payload, list) or len(payload) != 4 or not _ints(payload):
        return None
    return OpenToken(*payload)


def read_click_token(token: str) -> ClickToken | None:
    """The token's contents, or None for anything not signed by us as a click token."""
    payload = _loads(CLICK_SALT, token)
    if not isinstance(payload, list) or len(payload) != 6 or not _ints(payload[:5]):
        return None
    url = payload[5]
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        return None
    return ClickToken(
        sent_message_id=payload[0],
        team_id=payload[1],
        recipient=payload[2],
        issued_at=payload[3],
        link=payload[4],
        url=url,
    )


def device_cookie(device_id: str, team_id: int, user_id: int) -> str:
    return str(_signer(DEVICE_SALT).dumps([device_id, team_id, user_id]))


def read_device_cookie(value: str) -> DeviceRef | None:
    payload = _loads(DEVICE_SALT, value)
    if (
        not isinstance(payload, list)
        or len(payload) != 3
        or not isinstance(payload[0], str)
        or not _ints(payload[1:])
    ):
        return None
    return DeviceRef(payload[0], payload[1], payload[2])


@lru_cache(maxsize=4)
def _unsubscribe_ciphers(keys: tuple[str, ...]) -> tuple[AESSIV, ...]:
    """AES-SIV per signing key, newest first: deterministic, so one address has one link."""
    return tuple(AESSIV(hashlib.sha512(f"{UNSUBSCRIBE_SALT}:{k}".encode()).digest()) for k in keys)


def _unsubscribe_keys() -> tuple[AESSIV, ...]:
    return _unsubscribe_ciphers(tuple(get_settings().signing_keys))


def unsubscribe_token(team_id: int, email: str) -> str:
    payload = json.dumps([team_id, email.strip().lower()], separators=(",", ":")).encode()
    sealed = _unsubscribe_keys()[0].encrypt(payload, [UNSUBSCRIBE_SALT.encode()])
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def unsubscribe_url(base_url: str, team_id: int, email: str) -> str:
    """The https link of List-Unsubscribe and ``{{unsubscribe_link}}``."""
    return f"{base_url.rstrip('/')}/u/{unsubscribe_token(team_id, email)}"


def read_unsubscribe_token(token: str) -> UnsubscribeRef | None:
    """The team and address, or None for anything not made by us as an unsubscribe token."""
    try:
        sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        return None
    payload: Any = None
    for cipher in _unsubscribe_keys():
        try:
            payload = json.loads(cipher.decrypt(sealed, [UNSUBSCRIBE_SALT.encode()]))
            break
        except (InvalidTag, ValueError, UnicodeError):
            continue
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not _ints(payload[:1])
        or not isinstance(payload[1], str)
        or "@" not in payload[1]
    ):
        return None
    return UnsubscribeRef(payload[0], payload[1])


def unsubscribe_confirmation(token: str) -> str:
    """What the confirm page's form carries: proof the button, not a link scanner, posted."""
    return str(_signer(UNSUBSCRIBE_CONFIRM_SALT).dumps(token))


def is_unsubscribe_confirmation(token: str, value: str) -> bool:
    return bool(value) and _loads(UNSUBSCRIBE_CONFIRM_SALT, value) == token


def now_seconds() -> int:
    return int(time.time())
