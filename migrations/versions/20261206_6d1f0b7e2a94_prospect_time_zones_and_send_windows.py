"""prospect time zones and per-sequence send windows

`prospects.time_zone` (IANA name), `time_zone_source` (set, salesforce, phone,
domain) and `time_zone_note` (the words the pages show); NULL: the sequence's
zone applies. `sequences.time_zone` is that default; `send_days` (bit 0 =
Monday), `send_start_minute`/`send_end_minute` (minutes after local midnight)
and `holidays` (ISO dates) make the send window. Existing sequences keep sending
at any time (every day, 00:00-24:00) until someone sets a window: a migration
does not silently move a running campaign; new ones get Mon-Fri 08:00-18:00. `enrollments.wait_reason`: why a due step has not gone out.

Revision ID: 6d1f0b7e2a94
Revises: a7e4f29c1d05
Create Date: 2026-12-06 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6d1f0b7e2a94"
down_revision: str | None = "a7e4f29c1d05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prospects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("time_zone_source", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("time_zone_note", sa.String(length=200), nullable=True))
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("time_zone", sa.String(length=64), server_default="UTC", nullable=False)
        )
        batch_op.add_column(
            sa.Column("send_days", sa.Integer(), server_default="127", nullable=False)
        )
        batch_op.add_column(
            sa.Column("send_start_minute", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("send_end_minute", sa.Integer(), server_default="1440", nullable=False)
        )
        batch_op.add_column(sa.Column("holidays", sa.JSON(), nullable=True))
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wait_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("wait_reason")
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.drop_column("holidays")
        batch_op.drop_column("send_end_minute")
        batch_op.drop_column("send_start_minute")
        batch_op.drop_column("send_days")
        batch_op.drop_column("time_zone")
    with op.batch_alter_table("prospects", schema=None) as batch_op:
        batch_op.drop_column("time_zone_note")
        batch_op.drop_column("time_zone_source")
        batch_op.drop_column("time_zone")
