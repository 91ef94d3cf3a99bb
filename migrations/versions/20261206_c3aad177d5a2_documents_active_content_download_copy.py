"""documents: active content found, and the blob a download serves

A PDF with JavaScript, actions or embedded files is shown (as page images) and
downloaded only as a copy without them. `active_content` lists what was found
(NULL: not yet checked: documents from before are checked by the recovery
tick); `download_blob`/`download_bytes` name the blob a download serves.

Revision ID: c3aad177d5a2
Revises: c004b142b148
Create Date: 2026-12-06 04:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3aad177d5a2"
down_revision: str | None = "c004b142b148"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("active_content", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("download_blob", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("download_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("download_bytes")
        batch_op.drop_column("download_blob")
        batch_op.drop_column("active_content")
