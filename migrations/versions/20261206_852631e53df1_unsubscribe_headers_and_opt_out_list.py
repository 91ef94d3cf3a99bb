"""one-click unsubscribe and the opt-out list

`teams.unsubscribe_headers`: List-Unsubscribe and List-Unsubscribe-Post on
sequence emails (on for every team, existing ones too). `prospects.opted_out_reason`:
why an address is on the opt-out list, in words. `opt_out_changes`: every
change to the list, who made it, when and why.

Revision ID: 852631e53df1
Revises: 5b2e9c41d7a0
Create Date: 2026-12-06 12:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "852631e53df1"
down_revision: str | None = "5b2e9c41d7a0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("unsubscribe_headers", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("prospects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("opted_out_reason", sa.Text(), nullable=True))
    op.create_table(
        "opt_out_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("prospect_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["prospect_id"], ["prospects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_opt_out_changes_prospect", "opt_out_changes", ["prospect_id", "id"], unique=False
    )
    op.create_index("ix_opt_out_changes_team", "opt_out_changes", ["team_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_opt_out_changes_team", table_name="opt_out_changes")
    op.drop_index("ix_opt_out_changes_prospect", table_name="opt_out_changes")
    op.drop_table("opt_out_changes")
    with op.batch_alter_table("prospects", schema=None) as batch_op:
        batch_op.drop_column("opted_out_reason")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_column("unsubscribe_headers")
