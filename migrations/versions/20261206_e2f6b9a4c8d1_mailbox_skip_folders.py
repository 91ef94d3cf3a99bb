"""mailboxes: the folders a mailbox never syncs nor watches

`skip_folders`: a JSON list of role words ("Sent", "Drafts", "Trash", "Junk")
or folder names; NULL: SIGHTLINE_SKIP_FOLDERS. Kept out of the encrypted
credentials, which a sync rewrites when the provider rotates a token (an edit
there would race with it). See worker.sync.folders.

Revision ID: e2f6b9a4c8d1
Revises: d5e8a1c3b7f4
Create Date: 2026-12-06 12:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e2f6b9a4c8d1"
down_revision: str | None = "d5e8a1c3b7f4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("skip_folders", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_column("skip_folders")
