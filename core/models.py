"""The data model: what web and worker share.

Natural keys make every write idempotent:

- `SentMessage.message_id` is unique: the Message-ID as actually sent, in the
  canonical form of `worker.matching.msgid` (angle brackets, domain lower-cased).
  `(enrollment_id, step_position, attempt)` is unique too: inserting that row
  *is* the claim on a sequence step, so a step is sent at most once per attempt
  (a new attempt only after a soft bounce, see worker.sequences.rules).
- `InboundMessage` is unique per `(mailbox_id, provider_id)`.
- `Event.key` is unique: kind + what it is about + the thing that caused it
  (e.g. `reply:<sent id>:<inbound Message-ID>`), so re-running a sync, or seeing
  one reply in two teammates' mailboxes, records it once.
- `SalesforceOutbox.key` is unique: one row per Task we owe Salesforce.

Enrollment states::

    active ──reply──────────▶ replied
      │  ├──hard bounce─────▶ bounced   (also: too many soft bounces)
      │  ├──complaint/unsub─▶ opted_out
      │  ├──last step sent──▶ finished
      │  └──auto-reply/hand─▶ paused ──resume_at / hand──▶ active

    replied, bounced, opted_out are final; finished is final too, except that
    a soft bounce of the last step re-opens it (active) for that step's retry.

Every change writes an `EnrollmentTransition` with its reason and time.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a bigint.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


class Plan(enum.StrEnum):
    SOLO = "solo"
    TEAM = "team"


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


class EnrollmentState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    REPLIED = "replied"
    BOUNCED = "bounced"
    OPTED_OUT = "opted_out"
    FINISHED = "finished"


FINAL_STATES = frozenset(
    {
        EnrollmentState.REPLIED,
        EnrollmentState.BOUNCED,
        EnrollmentState.OPTED_OUT,
        EnrollmentState.FINISHED,
    }
)


class SendStatus(enum.StrEnum):
    SENDING = "sending"  # claimed; the provider may or may not have it yet
    SENT = "sent"
    CANCELLED = "cancelled"  # claimed, then the enrollment stopped before handing over
    FAILED = "failed"


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    WAITING_WHO = "waiting_who"  # no Lead/Contact with that email yet
    DONE = "done"
    FAILED = "failed"  # permanent: visible and replayable, never retried by itself


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    plan: Mapped[str] = mapped_column(String(20), default=Plan.SOLO)
    tracking_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    team: Mapped[Team] = relationship()


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; `prefix` identifies it in the UI."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


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
    # Provider-specific resume point, e.g. {"INBOX": {"uidvalidity": 7, "last_uid": 42}}.
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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prospect(Base):
    __tablename__ = "prospects"
    __table_args__ = (UniqueConstraint("team_id", "email", name="uq_prospects_team_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))  # lower-cased
    name: Mapped[str | None] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200))
    undeliverable_at: Mapped[datetime | None]
    opted_out_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sequence(Base):
    __tablename__ = "sequences"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    steps: Mapped[list[SequenceStep]] = relationship(
        order_by="SequenceStep.position", cascade="all, delete-orphan"
    )


class SequenceStep(Base):
    __tablename__ = "sequence_steps"
    __table_args__ = (UniqueConstraint("sequence_id", "position", name="uq_steps_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)  # 0-based
    # Seconds after the previous step was sent (after enrolment for the first step).
    delay_seconds: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(998))
    body_html: Mapped[str] = mapped_column(Text)
    same_thread: Mapped[bool] = mapped_column(Boolean, default=False)


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (
        UniqueConstraint("sequence_id", "prospect_id", name="uq_enrollments_prospect"),
        # The cron tick's query: active enrolments whose next step is due.
        Index("ix_enrollments_due", "state", "next_step_at"),
        # The web app's lists: a sequence's enrolments newest first, a prospect's enrolments.
        Index("ix_enrollments_sequence_id", "sequence_id", "id"),
        Index("ix_enrollments_prospect", "prospect_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    sequence_id: Mapped[int] = mapped_column(ForeignKey("sequences.id", ondelete="CASCADE"))
    prospect_id: Mapped[int] = mapped_column(ForeignKey("prospects.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(20), default=EnrollmentState.ACTIVE)
    state_reason: Mapped[str | None] = mapped_column(Text)
    state_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_step: Mapped[int] = mapped_column(Integer, default=0)  # position of the next step
    next_step_at: Mapped[datetime | None]  # None while a step is in flight or when done
    steps_sent: Mapped[int] = mapped_column(Integer, default=0)
    resume_at: Mapped[datetime | None]  # for a paused enrolment (out of office)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    prospect: Mapped[Prospect] = relationship()
    sequence: Mapped[Sequence] = relationship()


class EnrollmentTransition(Base):
    __tablename__ = "enrollment_transitions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    enrollment_id: Mapped[int] = mapped_column(
        ForeignKey("enrollments.id", ondelete="CASCADE"), index=True
    )
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text)
    event_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("events.id"))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class SentMessage(Base):
    __tablename__ = "sent_messages"
    __table_args__ = (
        UniqueConstraint("enrollment_id", "step_position", "attempt", name="uq_sent_step_attempt"),
        Index("ix_sent_status_claimed", "status", "claimed_at"),
        # The web app's sent list: a team's messages newest first.
        Index("ix_sent_team_id", "team_id", "id"),
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
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


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


# -- trackable attachments (issue 4) ---------------------------------------------


class DocumentStatus(enum.StrEnum):
    QUEUED = "queued"  # uploaded; a `documents` job will pick it up
    CONVERTING = "converting"  # LibreOffice is turning an Office file into a PDF
    RENDERING = "rendering"  # PyMuPDF is rendering pages (`progress` counts them)
    READY = "ready"
    FAILED = "failed"  # `error` says why, in words a user can act on


class Document(Base):
    """A file in a team's content library, and where its processing stands.

    `kind` is decided by the file's content, never its name. Processing is
    claimed with `claim_token` and kept alive by `heartbeat_at`; a claim whose
    heartbeat went stale is taken over (see `worker.documents.pipeline`).
    """

    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_team_created", "team_id", "created_at"),
        Index("ix_documents_status_heartbeat", "status", "heartbeat_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(255))  # as uploaded; shown to recipients
    kind: Mapped[str] = mapped_column(String(10))  # pdf, doc, docx, ppt, pptx, odt, odp
    content_type: Mapped[str] = mapped_column(String(120))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default=DocumentStatus.QUEUED)
    progress: Mapped[int] = mapped_column(Integer, default=0)  # percent
    error: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claim_token: Mapped[str | None] = mapped_column(String(32))
    heartbeat_at: Mapped[datetime | None]
    # Defaults for the links made when the document goes out in an email.
    allow_download: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_after_days: Mapped[int | None] = mapped_column(Integer)
    # What the PDF (the upload, or the one made from it) holds that a reader could
    # act on: codes from core.documents.findings; NULL: not checked by this version.
    active_content: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    # The blob a download serves ("original", "document.pdf" or "download.pdf", the
    # copy without active content); NULL: none may be offered.
    download_blob: Mapped[str | None] = mapped_column(String(100))
    download_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    ready_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]


class DocumentPage(Base):
    """One rendered page: its size at the 800-pixel rendering, and its text."""

    __tablename__ = "document_pages"
    __table_args__ = (UniqueConstraint("document_id", "number", name="uq_document_pages_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1-based
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text, default="")


class DocumentBlob(Base):
    """Bytes of a document's files (original, PDF, page images) in 1 MiB chunks.

    Used by the database blob store (`core.documents.storage`), the default.
    """

    __tablename__ = "document_blobs"
    __table_args__ = (
        UniqueConstraint("document_id", "name", "seq", name="uq_document_blobs_chunk"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    seq: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class MessageDocument(Base):
    """A document added to a sequence step (or one message): a tracked link or a plain file."""

    __tablename__ = "message_documents"
    __table_args__ = (
        UniqueConstraint("step_id", "document_id", name="uq_message_documents_step"),
        UniqueConstraint("sent_message_id", "document_id", name="uq_message_documents_sent"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    # RESTRICT: a document still in an email cannot vanish from under it.
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="RESTRICT"))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("sequence_steps.id", ondelete="CASCADE"))
    sent_message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE")
    )
    tracked: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentLink(Base):
    """One recipient's link to a document, made when the email carrying it was sent.

    Unique per (document, sent message, recipient), so a retried send reuses it.
    """

    __tablename__ = "document_links"
    __table_args__ = (
        UniqueConstraint(
            "document_id", "sent_message_id", "recipient", name="uq_document_links_recipient"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    sent_message_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sent_messages.id", ondelete="CASCADE"), index=True
    )
    recipient: Mapped[int] = mapped_column(Integer)  # index into to_addrs + cc_addrs
    prospect_id: Mapped[int | None] = mapped_column(
        ForeignKey("prospects.id", ondelete="CASCADE"), index=True
    )
    # False when the team could not track it (not on the team plan, or tracking off).
    tracked: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_download: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DocumentVisit(Base):
    """One opening of a document link, labelled like a tracking hit.

    Only the label is kept, never the address or user agent it was decided
    from. A visit is `confirmed` once the viewer reported time from a visible
    page (a script ran in a browser a person looks at); only confirmed `person`
    visits are counted, shown in the feed and sent to Salesforce.
    """

    __tablename__ = "document_visits"
    __table_args__ = (
        Index("ix_document_visits_document_started", "document_id", "started_at"),
        Index("ix_document_visits_link_started", "link_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    link_id: Mapped[int] = mapped_column(ForeignKey("document_links.id", ondelete="CASCADE"))
    hit_class: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200), default="")
    device_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    confirmed_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    current_page: Mapped[int] = mapped_column(Integer, default=1)
    pages_seen: Mapped[int] = mapped_column(Integer, default=0)
    total_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    downloaded_at: Mapped[datetime | None]
    event_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("events.id", ondelete="SET NULL")
    )


class DocumentPageView(Base):
    """Time on one page during one visit: the largest total the viewer reported."""

    __tablename__ = "document_page_views"
    __table_args__ = (UniqueConstraint("visit_id", "page", name="uq_document_page_views_page"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    visit_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("document_visits.id", ondelete="CASCADE")
    )
    page: Mapped[int] = mapped_column(Integer)
    ms: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- the web app: templates and one-off emails (issue 8) --------------------------


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
