"""teams: a tracking host of their own (pixel, click and document links)

`tracking_host`: the team's host name, a CNAME to the operator's (unique: one
team per host); `tracking_host_verified_at`: set when DNS showed it points at
us, and only then is it used in sent mail; `tracking_host_checked_at` and
`tracking_host_error`: the last check and, when it failed, why. See
core.tracking_domains.

Revision ID: d5e8a1c3b7f4
Revises: b41c7d93e0f2
Create Date: 2026-12-06 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "d5e8a1c3b7f4"
down_revision: str | None = "b41c7d93e0f2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tracking_host", sa.String(length=253), nullable=True))
        batch_op.add_column(
            sa.Column(
                "tracking_host_verified_at", core.models.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "tracking_host_checked_at", core.models.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(sa.Column("tracking_host_error", sa.String(length=300), nullable=True))
        batch_op.create_index("ix_teams_tracking_host", ["tracking_host"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_index("ix_teams_tracking_host")
        batch_op.drop_column("tracking_host_error")
        batch_op.drop_column("tracking_host_checked_at")
        batch_op.drop_column("tracking_host_verified_at")
        batch_op.drop_column("tracking_host")
