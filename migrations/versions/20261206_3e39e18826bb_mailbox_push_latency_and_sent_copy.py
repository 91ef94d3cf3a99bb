"""mailboxes: measured push latency, and a sent copy that could not be filed

`push_delays` holds the last few measured delays (seconds) between a message
arriving and the mailbox's push (IMAP IDLE, a Gmail or Graph notification)
telling us; `push_prompt` is the verdict drawn from them (NULL: not measured
yet). Both are written by worker.sync.push_latency and read by the poll and by
the fresh-before-send rule (worker.sequences.freshness).

`sent_copy_error`/`sent_copy_failed_at`: why the copy of a sent message could
not be filed in the user's Sent folder (the message itself went out); shown on
the mailboxes page until a later copy is filed.

Revision ID: 3e39e18826bb
Revises: c3aad177d5a2
Create Date: 2026-12-06 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "3e39e18826bb"
down_revision: str | None = "c3aad177d5a2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("push_delays", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("push_prompt", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("sent_copy_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("sent_copy_failed_at", core.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_column("sent_copy_failed_at")
        batch_op.drop_column("sent_copy_error")
        batch_op.drop_column("push_prompt")
        batch_op.drop_column("push_delays")
