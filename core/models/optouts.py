"""The opt-out list's history: who put an address on it or took it off, when, and why.

The list itself is `prospects.opted_out_at` (+ `opted_out_reason`): one place
that enrolling, the CSV import and the API already refuse. This table is the
record of every change to it, whoever made it: the recipient (the one-click
unsubscribe link, a "remove me" reply, a complaint) or a person of the team
(the page, the API), so "who took this address off the list?" has an answer.

Natural keys: none; a row per change, in order of `id`.
Indexes: `ix_opt_out_changes_prospect` (prospect_id, id) for one address's
history; `ix_opt_out_changes_team` (team_id, id) for the team's.

Must never happen: the list changed without a row here; a row of one team
shown to another. Rows go with their prospect (ON DELETE CASCADE), so erasing
a person erases this history of them too.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, BigId, utcnow


class OptOutSource(enum.StrEnum):
    LINK = "link"  # the unsubscribe link's confirm page
    ONE_CLICK = "one_click"  # RFC 8058 POST from the mail client
    REPLY = "reply"  # "remove me", or an email with subject "unsubscribe" (the mailto)
    COMPLAINT = "complaint"  # a spam complaint (ARF)
    PAGE = "page"  # a person of the team, on the opt-out list page
    API = "api"  # a person of the team, through the API


class OptOutChange(Base):
    __tablename__ = "opt_out_changes"
    __table_args__ = (
        Index("ix_opt_out_changes_prospect", "prospect_id", "id"),
        Index("ix_opt_out_changes_team", "team_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    prospect_id: Mapped[int] = mapped_column(ForeignKey("prospects.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(10))  # "added" | "removed"
    source: Mapped[str] = mapped_column(String(20))  # OptOutSource
    reason: Mapped[str | None] = mapped_column(Text)
    # The team member who made the change; None when the recipient did.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
