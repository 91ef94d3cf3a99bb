"""Erased addresses: the keyed hash kept of a person who asked to be forgotten.

What this module owns: turning an address into the one thing kept about an
erased person, and the question "was this address erased in this team?",
asked before anything stores an address (enrolling, a CSV import, the API,
compose). The hash is HMAC-SHA256 of the normalised address (trimmed,
lower-cased) under the app's ``SECRET_KEY``: a stolen copy of the list cannot
be reversed by hashing guessed addresses without the key. A check tries every
signing key (``SECRET_KEY_FALLBACKS`` too), so rotating the key keeps the list
working while the old key is still listed; a record is written under the
current key.

Must never: store or log the address it is asked about; raise anything but
`ErasedError` for an erased address.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from config import get_settings
from core.models import ErasedAddress

ERASED_MESSAGE = "this person asked to be erased"
_PURPOSE = b"sightline erased address v1:"


class ErasedError(ValueError):
    """The address belongs to a person who was erased: nothing about them may be stored."""

    def __init__(self) -> None:
        super().__init__(ERASED_MESSAGE)


def normalise(address: str) -> str:
    return address.strip().lower()


def address_hash(address: str, key: str | None = None) -> str:
    """Hex HMAC-SHA256 of the normalised address under `key` (default: ``SECRET_KEY``)."""
    secret = (key if key is not None else get_settings().secret_key).encode()
    return hmac.new(secret, _PURPOSE + normalise(address).encode(), hashlib.sha256).hexdigest()


def erased_addresses(session: Session, team_id: int, addresses: list[str]) -> set[str]:
    """Those of `addresses` (normalised) that the team erased."""
    if not addresses:
        return set()
    wanted: dict[str, str] = {}
    for address in {normalise(a) for a in addresses}:
        for key in get_settings().signing_keys:
            wanted[address_hash(address, key)] = address
    found: set[str] = set()
    hashes = list(wanted)
    for start in range(0, len(hashes), 500):
        rows = session.scalars(
            select(ErasedAddress.address_hash).where(
                ErasedAddress.team_id == team_id,
                ErasedAddress.address_hash.in_(hashes[start : start + 500]),
            )
        )
        found.update(wanted[h] for h in rows)
    return found


def is_erased(session: Session, team_id: int, address: str) -> bool:
    return bool(erased_addresses(session, team_id, [address]))


def refuse_erased(session: Session, team_id: int, address: str) -> None:
    """Raises:
    ErasedError: the team erased the person at `address`.
    """
    if is_erased(session, team_id, address):
        raise ErasedError()
