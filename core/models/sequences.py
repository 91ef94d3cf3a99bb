"""Sequences: prospects, sequences and their steps, enrolments and their history.

Natural keys: `prospects` (team_id, email), the email lower-cased;
`sequence_steps` (sequence_id, position); `enrollments` (sequence_id,
prospect_id): a prospect is enrolled in a sequence once.

Indexes: `ix_enrollments_due` (state, next_step_at), the cron tick's query for
due steps; `ix_enrollments_sequence_id` (sequence_id, id) and
`ix_enrollments_prospect` for the web app's lists; `enrollment_transitions.enrollment_id`.

Enrollment states::

    active ──reply──────────▶ replied
      │  ├──hard bounce─────▶ bounced   (also: too many soft bounces)
      │  ├──complaint/unsub─▶ opted_out
      │  ├──last step sent──▶ finished
      │  └──auto-reply/hand─▶ paused ──resume_at / hand──▶ active

    replied, bounced, opted_out are final; finished is final too, except that
    a soft bounce of the last step re-opens it (active) for that step's retry.

Must never happen: a state change without its `EnrollmentTransition` (reason
and time); an enrolment leaving a final state other than by that one retry.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models.base import Base, BigId, utcnow


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
    # No pixel and no rewritten links in mail to them; hits on older mail are dropped.
    do_not_track: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Their Contact's Account in Salesforce, once known: who their colleagues are.
    salesforce_account_id: Mapped[str | None] = mapped_column(String(18))
    # Why, in words (the unsubscribe link, a reply, a complaint, a person's note):
    # shown on the opt-out list and when an enrolment is refused.
    opted_out_reason: Mapped[str | None] = mapped_column(Text)
    # Their IANA zone and where it came from (core.zones.inference.SOURCES, but
    # never "sequence default": NULL here means the sequence's zone applies),
    # with the words the pages show ("the email domain .de").
    time_zone: Mapped[str | None] = mapped_column(String(64))
    time_zone_source: Mapped[str | None] = mapped_column(String(20))
    time_zone_note: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Sequence(Base):
    __tablename__ = "sequences"

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(200))
    # A real reply stops every live enrolment of the team at the prospect's company.
    stop_at_company: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The send window (core.zones.windows), in each prospect's zone; prospects
    # without one get `time_zone`. Days: bit 0 = Monday; minutes after local midnight.
    # The column defaults are "any time", what sequences made before windows
    # existed keep; the web app and the API give a new one Mon-Fri 08:00-18:00.
    time_zone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    send_days: Mapped[int] = mapped_column(Integer, default=127, server_default="127")
    send_start_minute: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    send_end_minute: Mapped[int] = mapped_column(Integer, default=1440, server_default="1440")
    holidays: Mapped[list[str] | None]  # ISO dates on which nothing is sent
    # Opens and clicks tracked in its emails: True or False as chosen, NULL: the
    # team's "tracking on by default" (Team.tracking_enabled) when each step is sent.
    tracking: Mapped[bool | None] = mapped_column(Boolean)
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
    # Why a due step has not gone out yet: "waiting for the send window: Mon 08:00 Europe/Berlin".
    wait_reason: Mapped[str | None] = mapped_column(Text)
    # Paused only because the sender (the mailbox owner) lacks a value a step needs
    # ({{sender_name}}, {{signature}}): resumed when they fill it in on their Account page.
    waits_for_sender: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
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
