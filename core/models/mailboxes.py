"""Mailboxes: a team's connected mailbox, how it pushes news of new mail, what came in.

Natural keys: `mailboxes` (team_id, email); `mailbox_push.mailbox_id` (one push
channel per mailbox); `inbound_messages` (mailbox_id, provider_id), so a sync
that runs twice, or resumes after a crash, records a message once.

Indexes: `mailboxes.team_id`; `ix_mailbox_push_kind_external` (kind,
external_id), the webhook's one lookup from a push to its mailbox;
`inbound_messages.team_id` and `inbound_messages.sent_message_id`.

A mailbox is *paused* while `paused_at` is set and `paused_until` is NULL (a
person resumes it) or still ahead (a provider's quota resets then).

Must never happen: credentials stored in the clear (they are Fernet-encrypted,
see `core.crypto`); a message that answers nothing of ours stored (the mailbox's
`sync_cursor` is what remembers that it was seen).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, BigId, utcnow


class MailboxKind(enum.StrEnum):
    IMAP = "imap"
    GMAIL = "gmail"
    EXCHANGE = "exchange"
    GRAPH = "graph"


class MailboxStatus(enum.StrEnum):
    ACTIVE = "active"
    NEEDS_RECONNECT = "needs_reconnect"
    ERROR = "error"
    DISABLED = "disabled"


class Mailbox(Base):
    """A connected mailbox. Credentials are Fernet-encrypted (see core.crypto)."""

    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("team_id", "email", name="uq_mailboxes_team_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20))
    email: Mapped[str] = mapped_column(String(320))
    credentials_encrypted: Mapped[str] = mapped_column(Text)
    # Provider-specific resume point, e.g. IMAP {"shape": "folders", "folders": {"INBOX":
    # {"uidvalidity": 7, "last_uid": 42}}, "listing": ...}.
    sync_cursor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default=MailboxStatus.ACTIVE)
    status_reason: Mapped[str | None] = mapped_column(Text)
    last_synced_at: Mapped[datetime | None]
    # Measured seconds between mail arriving and the push (IMAP IDLE, a Gmail or
    # Graph notification) saying so, newest last, and the verdict drawn from them
    # (None: not measured yet). See worker.sync.push_latency.
    push_delays: Mapped[list[float] | None] = mapped_column(JSON)
    push_prompt: Mapped[bool | None] = mapped_column(Boolean)
    # Why the copy of a sent message could not be filed in Sent (it went out);
    # cleared when a later copy is filed. Shown on the mailboxes page.
    sent_copy_error: Mapped[str | None] = mapped_column(Text)
    sent_copy_failed_at: Mapped[datetime | None]
    # Pacing (worker.sequences.pacing): at most `daily_cap` sends a UTC day, one
    # every `send_spacing_seconds` give or take the jitter; None: the default for
    # its kind (SIGHTLINE_DAILY_CAP_*, SIGHTLINE_SEND_SPACING_SECONDS).
    daily_cap: Mapped[int | None] = mapped_column(Integer)
    send_spacing_seconds: Mapped[int | None] = mapped_column(Integer)
    # No step is claimed for it before this (spacing, or the cap reached until midnight).
    next_send_at: Mapped[datetime | None]
    # Paused: a provider's quota error (until it resets) or the bounce guard (until
    # a person resumes it: paused_until NULL). Shown on the mailboxes page.
    paused_at: Mapped[datetime | None]
    paused_until: Mapped[datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # Folders never synced nor watched (worker.sync.folders: role words such as
    # "Sent", or folder names); None: SIGHTLINE_SKIP_FOLDERS.
    skip_folders: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PushKind(enum.StrEnum):
    GMAIL_WATCH = "gmail_watch"  # users.watch to a Pub/Sub topic; external_id = the Gmail address
    GRAPH_SUBSCRIPTION = "graph_subscription"  # external_id = Graph's subscription id


class MailboxPush(Base):
    """How a mailbox tells us about new mail without being polled, and until when.

    One row per Gmail or Microsoft 365 mailbox. `external_id` is what a push
    names (the Gmail address in a Pub/Sub notification, the subscription id in
    a Graph change notification), so the webhook finds the mailbox with one
    indexed lookup. Renewed by cron before `expires_at`
    (`worker.sync.push.renew_due`); Exchange streaming lives in the listener
    and needs no row.
    """

    __tablename__ = "mailbox_push"
    __table_args__ = (Index("ix_mailbox_push_kind_external", "kind", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(
        ForeignKey("mailboxes.id", ondelete="CASCADE"), unique=True
    )
    kind: Mapped[str] = mapped_column(String(30))
    external_id: Mapped[str | None] = mapped_column(String(320))
    expires_at: Mapped[datetime | None]
    renewed_at: Mapped[datetime | None]
    last_push_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class InboundMessage(Base):
    """An inbound message that answers one of ours (or failed to parse).

    Messages that answer nothing of ours are not stored: the mailbox cursor is
    what remembers that they were seen.
    """

    __tablename__ = "inbound_messages"
    __table_args__ = (UniqueConstraint("mailbox_id", "provider_id", name="uq_inbound_provider_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    provider_id: Mapped[str] = mapped_column(String(500))
    rfc_message_id: Mapped[str | None] = mapped_column(String(998))
    sent_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))  # reply, auto_reply, bounce, complaint, other
    from_addr: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(String(998))
    text: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
