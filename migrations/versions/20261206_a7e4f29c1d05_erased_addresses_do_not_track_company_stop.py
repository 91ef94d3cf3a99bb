"""erasure, do-not-track and the company stop

`erased_addresses`: what is kept of a person who was erased, a keyed hash of the
address per team (nothing else), so they are never enrolled or emailed again.
`prospects.do_not_track`: no pixel and no rewritten links in mail to them.
`prospects.salesforce_account_id`: their Contact's Account, once known.
`sequences.stop_at_company`: a real reply stops every live enrolment of the team
at the prospect's company.

Revision ID: a7e4f29c1d05
Revises: 852631e53df1
Create Date: 2026-12-06 12:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "a7e4f29c1d05"
down_revision: str | None = "852631e53df1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erased_addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("erased_by", sa.Integer(), nullable=True),
        sa.Column("erased_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["erased_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("team_id", "address_hash", name="uq_erased_addresses_team_hash"),
    )
    with op.batch_alter_table("prospects", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("do_not_track", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("salesforce_account_id", sa.String(length=18), nullable=True))
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("stop_at_company", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.drop_column("stop_at_company")
    with op.batch_alter_table("prospects", schema=None) as batch_op:
        batch_op.drop_column("salesforce_account_id")
        batch_op.drop_column("do_not_track")
    op.drop_table("erased_addresses")
