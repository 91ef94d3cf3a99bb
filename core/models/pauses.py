"""Paused sequences: the bounce guard stopped a sequence's sends until a person resumes it.

Natural key: `sequence_pauses.sequence_id` (a sequence is paused once; resuming
deletes the row). A mailbox's pause lives on the mailbox row itself
(`Mailbox.paused_at`), where the claim's conditional UPDATE reads it; a
sequence's is here so that the claim of a step of an unpaused sequence reads
one primary-key lookup and nothing more.

Must never happen: a pause without its reason (the enrolments show it while
their steps wait, and the team is told it in the Live Feed).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, utcnow


class SequencePause(Base):
    __tablename__ = "sequence_pauses"

    sequence_id: Mapped[int] = mapped_column(
        ForeignKey("sequences.id", ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    paused_at: Mapped[datetime] = mapped_column(default=utcnow)
