"""Salesforce: a team's org connection, engagement summaries, and the outbox of Tasks.

Natural keys: `salesforce_connections.team_id` (one org per team);
`salesforce_engagement.sent_message_id` (one summary per sent email);
`SalesforceOutbox.key`: one row per Task we owe Salesforce, so queuing it again
is a no-op.

Indexes: `ix_outbox_team_status_due` (team_id, status, next_attempt_at), the
flush's query; `salesforce_outbox.claim_token`; `salesforce_engagement.team_id`.

Must never happen: an outbox row written outside its event's transaction, or
dropped (a permanent failure stays visible and replayable); a rotated refresh
token saved over a newer one (`token_version` is compared and set);
credentials stored in the clear.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, BigId, utcnow


class SalesforceAuthKind(enum.StrEnum):
    DEFAULT = "default"  # the settings-level org (SALESFORCE_*), shared by every such team
    OAUTH = "oauth"  # web-server flow: a refresh token, rotated when the org says so
    JWT = "jwt"  # JWT bearer: server-to-server, nothing stored but the username
    PASSWORD = "password"  # noqa: S105 - username + password + security token (development)


class SalesforceConnectionStatus(enum.StrEnum):
    ACTIVE = "active"
    NEEDS_RECONNECT = "needs_reconnect"  # the org refused our credentials: a person must act
    DISCONNECTED = "disconnected"  # a person disconnected it; writes are held, never dropped


class SalesforceConnection(Base):
    """A team's Salesforce org and the team's Salesforce settings.

    A team without a row uses the settings-level org with default settings.
    Credentials (refresh/access token, password) are Fernet-encrypted;
    `token_version` moves on every change so a rotated refresh token is saved
    with a compare-and-set, never over a newer one.
    """

    __tablename__ = "salesforce_connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), unique=True)
    auth_kind: Mapped[str] = mapped_column(String(20), default=SalesforceAuthKind.DEFAULT)
    login_url: Mapped[str | None] = mapped_column(String(500))
    instance_url: Mapped[str | None] = mapped_column(String(500))
    org_id: Mapped[str | None] = mapped_column(String(18))
    username: Mapped[str | None] = mapped_column(String(320))
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default=SalesforceConnectionStatus.ACTIVE)
    status_reason: Mapped[str | None] = mapped_column(Text)
    # Above this share (percent) of the org's daily API allowance, engagement
    # updates wait; sends and replies keep flowing.
    budget_share: Mapped[int] = mapped_column(Integer, default=80)
    create_leads: Mapped[bool] = mapped_column(Boolean, default=False)
    connected_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SalesforceEngagement(Base):
    """Opens, clicks and document views of one sent email, summarised for its Task.

    Counters move in the same transaction as the event that moved them (see
    `worker.salesforce.engagement.queue_engagement`); the Salesforce write is
    an outbox row that carries no numbers and reads these when it is sent.
    """

    __tablename__ = "salesforce_engagement"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    sent_message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE"), unique=True
    )
    opens: Mapped[int] = mapped_column(Integer, default=0)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    document_views: Mapped[int] = mapped_column(Integer, default=0)
    first_opened_at: Mapped[datetime | None]
    last_opened_at: Mapped[datetime | None]
    first_clicked_at: Mapped[datetime | None]
    last_clicked_at: Mapped[datetime | None]
    first_viewed_at: Mapped[datetime | None]
    last_viewed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    WAITING_WHO = "waiting_who"  # no Lead/Contact with that email yet
    DONE = "done"
    FAILED = "failed"  # permanent: visible and replayable, never retried by itself


class SalesforceOutbox(Base):
    """A Task we owe Salesforce. Written in the same transaction as its event."""

    __tablename__ = "salesforce_outbox"
    __table_args__ = (Index("ix_outbox_team_status_due", "team_id", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(30))  # task_sent, task_reply, task_engagement
    event_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("events.id", ondelete="SET NULL")
    )
    who_email: Mapped[str] = mapped_column(String(320))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default=OutboxStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    claim_token: Mapped[str | None] = mapped_column(String(64), index=True)
    claimed_at: Mapped[datetime | None]
    salesforce_id: Mapped[str | None] = mapped_column(String(18))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    done_at: Mapped[datetime | None]
    # The Contact/Lead the Task went to, and since when the row waited for one.
    who_id: Mapped[str | None] = mapped_column(String(18))
    waiting_since: Mapped[datetime | None]
