"""mailboxes: daily cap, spacing and pauses; sequences paused by the bounce guard

`daily_cap`/`send_spacing_seconds`: a mailbox's own pacing (NULL: the default
for its kind); `next_send_at`: no step is claimed for it before then (spacing
with jitter, or the cap reached until midnight UTC). `paused_at`,
`paused_until` (NULL: until a person resumes it) and `pause_reason`: a
provider's quota error or the bounce guard. `sequence_pauses`: a sequence the
bounce guard paused, one row while paused. See worker.sequences.pacing.

Revision ID: b41c7d93e0f2
Revises: 37a8512bf4ae
Create Date: 2026-12-06 12:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "b41c7d93e0f2"
down_revision: str | None = "37a8512bf4ae"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("daily_cap", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("send_spacing_seconds", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("next_send_at", core.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("paused_at", core.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("paused_until", core.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("pause_reason", sa.Text(), nullable=True))
    op.create_table(
        "sequence_pauses",
        sa.Column("sequence_id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("paused_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sequence_id"], ["sequences.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sequence_id"),
    )
    with op.batch_alter_table("sequence_pauses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sequence_pauses_team_id"), ["team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sequence_pauses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sequence_pauses_team_id"))
    op.drop_table("sequence_pauses")
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_column("pause_reason")
        batch_op.drop_column("paused_until")
        batch_op.drop_column("paused_at")
        batch_op.drop_column("next_send_at")
        batch_op.drop_column("send_spacing_seconds")
        batch_op.drop_column("daily_cap")
