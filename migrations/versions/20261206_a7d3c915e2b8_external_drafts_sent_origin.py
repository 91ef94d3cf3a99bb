"""add-on drafts: external_drafts, sent_messages.origin

`external_drafts`: a draft composed in Gmail or Outlook with our tracking, one
per (user, add-on, the client's draft id), and the sent message standing for it
(status `draft` until the sync finds its sent copy). `sent_messages.origin`:
"gmail" or "outlook" for such messages, NULL for everything Sightline sent.
Nothing existing changes: the new column is NULL on every row. See
core.models.addons.

Revision ID: a7d3c915e2b8
Revises: 98a9929f0ee6
Create Date: 2026-12-06 15:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "a7d3c915e2b8"
down_revision: str | None = "98a9929f0ee6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=20), nullable=True))

    op.create_table(
        "external_drafts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("draft_ref", sa.String(length=500), nullable=False),
        sa.Column("sent_message_id", core.models.BigId, nullable=False),
        sa.Column("per_recipient", sa.Boolean(), nullable=False),
        sa.Column("created_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("recognised_at", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("provider_id", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["sent_message_id"], ["sent_messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "source", "draft_ref", name="uq_external_drafts_ref"),
        sa.UniqueConstraint("sent_message_id"),
    )
    with op.batch_alter_table("external_drafts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_external_drafts_team_id"), ["team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("external_drafts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_external_drafts_team_id"))
    op.drop_table("external_drafts")
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.drop_column("origin")
