"""What we sent, and what happened: sent messages and events.

Natural keys make every write idempotent:

- `SentMessage.message_id` is unique: the Message-ID as actually sent, in the
  canonical form of `worker.matching.msgid` (angle brackets, domain lower-cased).
  `(enrollment_id, step_position, attempt)` is unique too: inserting that row
  *is* the claim on a sequence step, so a step is sent at most once per attempt
  (a new attempt only after a soft bounce, see worker.sequences.rules).
- `Event.key` is unique: kind + what it is about + the thing that caused it
  (e.g. `reply:<sent id>:<inbound Message-ID>`), so re-running a sync, or seeing
  one reply in two teammates' mailboxes, records it once.

Indexes: `ix_sent_status_claimed` (status, claimed_at) finds stuck sends;
`ix_sent_team_id` (team_id, id) is the web app's sent list;
`ix_sent_mailbox_thread` (mailbox_id, thread_id) and `ix_sent_mailbox_sent_at`
(mailbox_id, sent_at) match replies that lost their threading headers;
`ix_events_team_time`
and `ix_events_enrollment_time` are the feeds, newest first.

Must never happen: a step handed to a provider twice for one attempt; an event
recorded twice, or lost.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, BigId, utcnow


class SendStatus(enum.StrEnum):
    SENDING = "sending"  # claimed; the provider may or may not have it yet
    SENT = "sent"
    CANCELLED = "cancelled"  # claimed, then the enrollment stopped before handing over
    FAILED = "failed"
    # A draft composed in Gmail or Outlook with our tracking (core.models.addons),
    # not seen in the mailbox's Sent folder yet; never handed over by us.
    DRAFT = "draft"


class SentMessage(Base):
    __tablename__ = "sent_messages"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_position", "attempt", name="uq_sent_step_attempt"),
        Index("ix_sent_status_claimed", "status", "claimed_at"),
        # The web app's sent list: a team's messages newest first.
        Index("ix_sent_team_id", "team_id", "id"),
        # Replies without threading headers (worker.matching.threads): by the
        # provider's thread, and by subject among a mailbox's recent sends.
        Index("ix_sent_mailbox_thread", "mailbox_id", "thread_id"),
        Index("ix_sent_mailbox_sent_at", "mailbox_id", "sent_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), index=True
    )
    step_position: Mapped[int | None] = mapped_column(Integer)
    prospect_id: Mapped[int | None] = mapped_column(
        ForeignKey("prospects.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(String(998), unique=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(500))
    thread_id: Mapped[str | None] = mapped_column(String(500))
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    references: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(998))
    to_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), default=SendStatus.SENDING)
    # Hand-overs attempted. Above zero, a retry first asks the provider whether the
    # message already went out (a crash may have come after the provider took it).
    send_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # 0 for a step's first send; n for its n-th re-send after a soft bounce.
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    # Where a message sent from the mail client itself came from ("gmail",
    # "outlook": core.models.addons); None for what Sightline handed over.
    origin: Mapped[str | None] = mapped_column(String(20))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class Event(Base):
    """Something that happened, recorded once under its natural `key`."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_team_time", "team_id", "occurred_at"),
        Index("ix_events_enrollment_time", "enrollment_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(30))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE"), index=True
    )
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE")
    )
    prospect_id: Mapped[int | None] = mapped_column(
        ForeignKey("prospects.id", ondelete="CASCADE"), index=True
    )
    inbound_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("inbound_messages.id", ondelete="CASCADE")
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
