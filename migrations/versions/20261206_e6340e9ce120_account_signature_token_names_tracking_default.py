"""account: signature, token names; sequences' tracking choice; enrolments waiting on the sender

`users.signature`: the HTML `{{signature}}` becomes (allow-listed when saved).
`api_tokens.name`: what its owner called a token made on the Account page.
`sequences.tracking`: opens and clicks on or off for this sequence; NULL follows
the team's default (`teams.tracking_enabled`, "tracking on by default").
`enrollments.waits_for_sender`: paused only for a value the sender lacks, so the
sender filling it in resumes it (web.app.account).

Revision ID: e6340e9ce120
Revises: e2f6b9a4c8d1
Create Date: 2026-12-06 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e6340e9ce120"
down_revision: str | None = "e2f6b9a4c8d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=True))
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=100), nullable=True))
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tracking", sa.Boolean(), nullable=True))
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("waits_for_sender", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_column("waits_for_sender")
    with op.batch_alter_table("sequences", schema=None) as batch_op:
        batch_op.drop_column("tracking")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("name")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("signature")
