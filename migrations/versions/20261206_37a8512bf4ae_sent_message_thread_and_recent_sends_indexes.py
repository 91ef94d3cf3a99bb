"""sent messages: indexes for replies that lost their threading headers

A reply whose client dropped In-Reply-To/References is matched by the
provider's thread (Gmail threadId, Graph/EWS conversation id, stored at send in
`thread_id`) or, on IMAP, by subject among what the mailbox sent recently
(worker.matching.threads). Both lookups start from the mailbox.

Revision ID: 37a8512bf4ae
Revises: 6d1f0b7e2a94
Create Date: 2026-12-06 12:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "37a8512bf4ae"
down_revision: str | None = "6d1f0b7e2a94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.create_index("ix_sent_mailbox_thread", ["mailbox_id", "thread_id"], unique=False)
        batch_op.create_index("ix_sent_mailbox_sent_at", ["mailbox_id", "sent_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sent_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_sent_mailbox_sent_at")
        batch_op.drop_index("ix_sent_mailbox_thread")
