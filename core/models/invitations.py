"""Invitations: an admin asks someone by email to join their team.

Natural key: `invitations` (team_id, email), the email lower-cased: one
invitation per address per team. Inviting an address again (after the last
invitation expired, was revoked or was used) re-arms that row with a new token
and expiry rather than adding another. `token_hash` (unique) is the SHA-256 of
the link's random token, the one lookup the public accept page makes.

An invitation is *pending* while it is neither accepted nor revoked and
`expires_at` is ahead; only a pending invitation can be accepted, and only once
(the accept is a conditional UPDATE on `accepted_at IS NULL`).

Must never happen: the token stored in the clear (only its hash is kept; the
link is shown or mailed once, when it is made); an invitation of one team read
or changed through another.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, utcnow
from core.models.teams import Role


class Invitation(Base):
    __tablename__ = "invitations"
    __table_args__ = (UniqueConstraint("team_id", "email", name="uq_invitations_team_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20), default=Role.MEMBER)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When the current link was made (the first send or the latest resend).
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    accepted_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    revoked_at: Mapped[datetime | None]

    def state(self, now: datetime) -> str:
        """pending, accepted, revoked or expired (what the members page and the API show)."""
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "pending"
