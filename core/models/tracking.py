"""Tracking hits: every pixel load and link click, labelled once when drained.

Natural key: `tracking_hits.stream_id`, the Redis stream entry the hit came
from, so draining an entry twice stores it once.

Indexes: `ix_tracking_hits_sent_at` (sent_message_id, at) for a message's
history; `ix_tracking_hits_at` for the retention sweep that clears addresses
and user agents; `tracking_hits.team_id`.

Must never happen: a hit dropped because of its label (every hit is kept,
`person` or not); an address or user agent kept past the tracking retention.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, BigId, utcnow


class TrackingHit(Base):
    """One pixel load or link click, labelled (person, self, apple_proxy, ...).

    Keyed by the Redis stream entry it came from, so draining an entry twice
    stores it once. Every hit is kept, whatever its label; `ip` and
    `user_agent` are cleared after the tracking retention (README).
    """

    __tablename__ = "tracking_hits"
    __table_args__ = (
        Index("ix_tracking_hits_sent_at", "sent_message_id", "at"),
        Index("ix_tracking_hits_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    stream_id: Mapped[str] = mapped_column(String(40), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    sent_message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE")
    )
    recipient: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(10))  # open, click
    link: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)
    hit_class: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200), default="")
    method: Mapped[str] = mapped_column(String(10))
    ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    device_id: Mapped[str | None] = mapped_column(String(32))
    event_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("events.id", ondelete="SET NULL")
    )
    at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
