"""mailbox push: Gmail watches and Graph subscriptions

One row per Gmail or Microsoft 365 mailbox: what a push names (the Gmail
address, the Graph subscription id), until when it lasts, and its last error.

Revision ID: 70b4f15fad0c
Revises: d8b9f734ca58
Create Date: 2026-11-27 07:50:08.713473
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "70b4f15fad0c"
down_revision: str | None = "d8b9f734ca58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mailbox_push",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("external_id", sa.String(length=320), nullable=True),
        sa.Column("expires_at", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("renewed_at", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_push_at", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox_id"),
    )
    with op.batch_alter_table("mailbox_push", schema=None) as batch_op:
        batch_op.create_index(
            "ix_mailbox_push_kind_external", ["kind", "external_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("mailbox_push", schema=None) as batch_op:
        batch_op.drop_index("ix_mailbox_push_kind_external")

    op.drop_table("mailbox_push")
