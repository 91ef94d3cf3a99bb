"""Teams and the people in them: users, their API tokens, the browsers they sign in from.

Natural keys: `teams.name`; `teams.tracking_host` (one team per tracking host);
`users.email` (one account per address, across
teams); `api_tokens.token_hash`; `devices.public_id` (what the signed device
cookie names).

A user is an `admin` or a `member` of their team (`Role`; what each may do is
`web.roles`'). A removed user keeps their row (their mailboxes, sequences and
history still name them) with `removed_at` set: they cannot sign in, their
tokens are revoked, and they are not counted among the team's people.

Indexes: `users.team_id`, `api_tokens.user_id`, `devices.team_id` and
`devices.user_id`; `ix_sign_ins_team_at` (team_id, at) answers "did someone of
this team sign in from this address lately", which labels a tracking hit `self`.

Must never happen: an API token stored in the clear (only its SHA-256 is kept);
a revoked device's cookie still marking hits as the team's own; a sign-in's
address or user agent kept past the tracking retention (`worker.events` clears them).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models.base import Base, BigId, utcnow


class Plan(enum.StrEnum):
    SOLO = "solo"
    TEAM = "team"


class Role(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class Team(Base):
    __tablename__ = "teams"
    __table_args__ = (Index("ix_teams_tracking_host", "tracking_host", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    plan: Mapped[str] = mapped_column(String(20), default=Plan.SOLO)
    tracking_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # List-Unsubscribe + List-Unsubscribe-Post (RFC 8058) on sequence emails.
    unsubscribe_headers: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The team's own host for pixels, clicks and document links (a CNAME to the
    # operator's), lower-cased. Used in sent mail only once `tracking_host_verified_at`
    # is set; `tracking_host_error` says why the last check failed (core.tracking_domains).
    tracking_host: Mapped[str | None] = mapped_column(String(253))
    tracking_host_verified_at: Mapped[datetime | None]
    tracking_host_checked_at: Mapped[datetime | None]
    tracking_host_error: Mapped[str | None] = mapped_column(String(300))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    # `{{signature}}`: HTML the allow-list kept (core.templates.clean_signature); NULL: none.
    signature: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(20), default=Role.MEMBER, server_default=Role.MEMBER)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Removed from the team by an admin (web.members): no sign-in, no token, no sync.
    removed_at: Mapped[datetime | None]

    team: Mapped[Team] = relationship()

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN and self.removed_at is None


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; `prefix` identifies it in the UI."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # What its owner called it on the Account page ("CI", "laptop"); NULL for CLI-made ones.
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class Device(Base):
    """A browser that signed in to the web app. Hits carrying its cookie are `self`.

    `public_id` is what the signed device cookie names; revoking the row makes
    the cookie count for nothing.
    """

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    user_agent: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class SignIn(Base):
    """A successful sign-in. Its address marks the team's own hits for a while.

    `ip` and `user_agent` are cleared after the tracking retention (README).
    """

    __tablename__ = "sign_ins"
    __table_args__ = (Index("ix_sign_ins_team_at", "team_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id", ondelete="SET NULL"))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    at: Mapped[datetime] = mapped_column(default=utcnow)
