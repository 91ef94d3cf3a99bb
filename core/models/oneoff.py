"""Emails written in the web app: saved templates, one-off emails and their attachments.

Natural keys: `one_off_emails.sent_message_id` (a one-off becomes exactly one
sent message when it is claimed).

Indexes: `ix_one_off_emails_due` (status, send_at), the cron tick's query;
`ix_one_off_emails_team` (team_id, status, send_at) and
`ix_email_templates_team_name` for the web app's lists;
`one_off_emails.prospect_id`, `one_off_attachments.email_id`.

Must never happen: a one-off both sent and cancelled (one conditional UPDATE
from scheduled decides, see `OneOffEmail`); a plain attachment tracked.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, BigId, utcnow


class EmailTemplate(Base):
    """A saved subject and body with placeholders (`core.templates`), shared by the team."""

    __tablename__ = "email_templates"
    __table_args__ = (Index("ix_email_templates_team_name", "team_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(998))
    body_html: Mapped[str] = mapped_column(Text)  # sanitized when saved
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OneOffStatus(enum.StrEnum):
    SCHEDULED = "scheduled"  # waits for `send_at`; may still be cancelled
    CLAIMED = "claimed"  # its SentMessage exists: from here on it is a send like any other
    CANCELLED = "cancelled"


class OneOffEmail(Base):
    """An email written by hand in the web app, sent now or at `send_at`.

    The subject and body are final (placeholders filled and checked when it was
    composed). Claiming it is a conditional UPDATE scheduled → claimed that
    inserts its `SentMessage` in the same transaction
    (`worker.sequences.oneoff.claim_one_off`); from then on it is delivered,
    tracked and logged to Salesforce exactly like a sequence step. Cancelling is
    the same UPDATE towards cancelled: whichever commits first wins.
    """

    __tablename__ = "one_off_emails"
    __table_args__ = (
        Index("ix_one_off_emails_due", "status", "send_at"),
        Index("ix_one_off_emails_team", "team_id", "status", "send_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    # The first To recipient: whose data filled the placeholders, whose Salesforce record
    # gets the Task.
    prospect_id: Mapped[int | None] = mapped_column(
        ForeignKey("prospects.id", ondelete="SET NULL"), index=True
    )
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("email_templates.id", ondelete="SET NULL")
    )
    to_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    cc_addrs: Mapped[list[str]] = mapped_column(JSON, default=list)
    subject: Mapped[str] = mapped_column(String(998))
    body_html: Mapped[str] = mapped_column(Text)
    tracked: Mapped[bool] = mapped_column(Boolean, default=True)
    # Library documents inserted as tracked links, in order (message_documents at claim).
    document_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20), default=OneOffStatus.SCHEDULED)
    send_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="SET NULL"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[datetime | None]


class OneOffAttachment(Base):
    """A plain file attached to a one-off email: sent as a MIME attachment, never tracked."""

    __tablename__ = "one_off_attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_id: Mapped[int] = mapped_column(
        ForeignKey("one_off_emails.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(120))
    size_bytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
