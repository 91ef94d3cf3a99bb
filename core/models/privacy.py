"""Erasure: the one thing kept about a person who asked to be forgotten.

Natural key: `erased_addresses` (team_id, address_hash). The hash is an HMAC of
the normalised address under the app's secret (`core.erasure`), so the list
names nobody and cannot be reversed by hashing guessed addresses offline.

Indexes: the unique key above, which is also the only lookup (is this address
erased in this team?).

Must never happen: the address, the name or anything else about the person
stored here; an erased address enrolled, imported or written to again.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, utcnow


class ErasedAddress(Base):
    """A suppression record: this team erased the person at the hashed address."""

    __tablename__ = "erased_addresses"
    __table_args__ = (
        UniqueConstraint("team_id", "address_hash", name="uq_erased_addresses_team_hash"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    address_hash: Mapped[str] = mapped_column(String(64))  # hex HMAC-SHA256
    # Who asked for it (a team user), for the team's own accountability.
    erased_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    erased_at: Mapped[datetime] = mapped_column(default=utcnow)
