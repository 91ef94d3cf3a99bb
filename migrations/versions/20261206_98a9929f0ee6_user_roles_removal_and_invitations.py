"""users: admin or member, removed; invitations to join a team

`users.role`: `admin` or `member` (web.roles says what each may do). Every user
that exists when this runs becomes an admin: until now every user could do
everything, so an upgrade takes nothing away from anyone, and the lowest id of
a team is not a safe guess of who should keep the keys (it is often an API-only
account made by a script, or someone who has left). An admin demotes the others
on the members page. New users are members unless made otherwise (the first
user of a new team is its admin).

`users.removed_at`: removed from the team (the row stays, so their mailboxes,
sequences and history still name them).

`invitations`: one per address per team (team_id, email); `token_hash` is the
SHA-256 of the link's token. See core.models.invitations.

Revision ID: 98a9929f0ee6
Revises: e6340e9ce120
Create Date: 2026-12-06 15:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "98a9929f0ee6"
down_revision: str | None = "e6340e9ce120"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The server default fills the existing rows with "admin"; it becomes
    # "member" right after, for rows inserted without a role from then on.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=20), nullable=False, server_default="admin")
        )
        batch_op.add_column(
            sa.Column("removed_at", core.models.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column(
            "role",
            existing_type=sa.String(length=20),
            existing_nullable=False,
            server_default="member",
        )

    op.create_table(
        "invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("invited_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("accepted_user_id", sa.Integer(), nullable=True),
        sa.Column("revoked_at", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["invited_by_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["accepted_user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("team_id", "email", name="uq_invitations_team_email"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_invitations_team_id"), ["team_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_invitations_team_id"))
    op.drop_table("invitations")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("removed_at")
        batch_op.drop_column("role")
