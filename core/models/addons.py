"""Drafts composed in Gmail or Outlook with the add-ons: their tracking records.

A draft into which a salesperson inserted a tracked link or the pixel from the
Gmail add-on or the Outlook add-in has one `external_drafts` row and one
`sent_messages` row (status ``draft``, `origin` ``gmail`` or ``outlook``): the
pixel's and the document links' signed tokens name that sent message, so hits
count from the moment the mail is out, before any sync has seen it. When the
sync finds the sent copy in the mailbox's Sent folder carrying one of those
tokens (`worker.sync.sent_mail`), the sent message takes the copy's real
Message-ID, thread and recipients and becomes ``sent``; `recognised_at` says
when, and `provider_id` which copy.

Natural key: `external_drafts` (user_id, source, draft_ref): the add-on's own id
for the draft, so inserting twice into one draft makes nothing twice (the
document links are unique per document, sent message and recipient besides).

Must never happen: a draft record of one team recognised in another team's
mailbox (the token's team and the mailbox's team must agree); a sent message
with none of our tokens stored.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, BigId, utcnow


class DraftSource(enum.StrEnum):
    GMAIL = "gmail"
    OUTLOOK = "outlook"


class ExternalDraft(Base):
    """A Gmail or Outlook draft that carries our tracking, and its sent message."""

    __tablename__ = "external_drafts"
    __table_args__ = (
        UniqueConstraint("user_id", "source", "draft_ref", name="uq_external_drafts_ref"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The mailbox whose Sent folder the sent copy is expected in.
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(20))
    draft_ref: Mapped[str] = mapped_column(String(500))
    sent_message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE"), unique=True
    )
    # True: the draft had one To, whose link and pixel these are; False: views
    # are the draft's (several recipients, or none yet).
    per_recipient: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    recognised_at: Mapped[datetime | None]
    provider_id: Mapped[str | None] = mapped_column(String(500))
