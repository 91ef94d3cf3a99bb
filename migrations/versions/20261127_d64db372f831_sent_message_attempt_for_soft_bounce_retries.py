"""sent message attempt for soft bounce retries

A step re-sent after a soft bounce is a new SentMessage (its own Message-ID)
with attempt n+1; the claim's unique key becomes (enrollment, step, attempt).

Revision ID: d64db372f831
Revises: 6e33c62c5807
Create Date: 2026-11-27 07:34:11.047367
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d64db372f831"
down_revision: str | None = "6e33c62c5807"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), server_default="0", nullable=False))
        batch_op.drop_constraint(batch_op.f("uq_sent_step"), type_="unique")
        batch_op.create_unique_constraint(
            "uq_sent_step_attempt", ["enrollment_id", "step_position", "attempt"]
        )


def downgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.drop_constraint("uq_sent_step_attempt", type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_sent_step"), ["enrollment_id", "step_position"]
        )
        batch_op.drop_column("attempt")
