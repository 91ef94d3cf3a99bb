"""web app: email templates, one-off emails and their attachments, list indexes

Saved templates; emails written by hand (sent now or scheduled) with their plain
file attachments; and indexes for the app's lists: a team's sent messages newest
first, a sequence's enrolments, a prospect's enrolments.

Revision ID: c004b142b148
Revises: 70b4f15fad0c
Create Date: 2026-11-27 08:21:18.354927
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "c004b142b148"
down_revision: str | None = "70b4f15fad0c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("created_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("email_templates", schema=None) as batch_op:
        batch_op.create_index("ix_email_templates_team_name", ["team_id", "name"], unique=False)

    op.create_table(
        "one_off_emails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("prospect_id", sa.Integer(), nullable=True),
        sa.Column("template_id", sa.Integer(), nullable=True),
        sa.Column("to_addrs", sa.JSON(), nullable=False),
        sa.Column("cc_addrs", sa.JSON(), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=False),
        sa.Column("tracked", sa.Boolean(), nullable=False),
        sa.Column("document_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("send_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "sent_message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", core.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["prospect_id"], ["prospects.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["sent_message_id"], ["sent_messages.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["template_id"], ["email_templates.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sent_message_id"),
    )
    with op.batch_alter_table("one_off_emails", schema=None) as batch_op:
        batch_op.create_index("ix_one_off_emails_due", ["status", "send_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_one_off_emails_prospect_id"), ["prospect_id"], unique=False
        )
        batch_op.create_index(
            "ix_one_off_emails_team", ["team_id", "status", "send_at"], unique=False
        )

    op.create_table(
        "one_off_attachments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_id", sa.Integer(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=120), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["email_id"], ["one_off_emails.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("one_off_attachments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_one_off_attachments_email_id"), ["email_id"], unique=False
        )

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index("ix_enrollments_prospect", ["prospect_id"], unique=False)
        batch_op.create_index("ix_enrollments_sequence_id", ["sequence_id", "id"], unique=False)

    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.create_index("ix_sent_team_id", ["team_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_sent_team_id")

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollments_sequence_id")
        batch_op.drop_index("ix_enrollments_prospect")

    with op.batch_alter_table("one_off_attachments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_one_off_attachments_email_id"))

    op.drop_table("one_off_attachments")
    with op.batch_alter_table("one_off_emails", schema=None) as batch_op:
        batch_op.drop_index("ix_one_off_emails_team")
        batch_op.drop_index(batch_op.f("ix_one_off_emails_prospect_id"))
        batch_op.drop_index("ix_one_off_emails_due")

    op.drop_table("one_off_emails")
    with op.batch_alter_table("email_templates", schema=None) as batch_op:
        batch_op.drop_index("ix_email_templates_team_name")

    op.drop_table("email_templates")
