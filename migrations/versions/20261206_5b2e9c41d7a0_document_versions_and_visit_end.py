"""documents: a version replaced in place, and when a reader's visit ended

`documents.version` counts the files a document has held (1 for the upload; a
replace adds one, the links and their tokens stay). `document_visits.document_version`
is the version the visit read, so an old visit's page times stay about the pages
it saw, and the library says which version that was. `document_visits.ended_at`:
the viewer said the reader left (its last beacon); NULL while reading, or when the
tab was closed without a word (the Live Feed then goes by `last_seen_at`).

Revision ID: 5b2e9c41d7a0
Revises: 3e39e18826bb
Create Date: 2026-12-06 11:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.models

revision: str = "5b2e9c41d7a0"
down_revision: str | None = "3e39e18826bb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    with op.batch_alter_table("document_visits", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("document_version", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column("ended_at", core.models.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("document_visits", schema=None) as batch_op:
        batch_op.drop_column("ended_at")
        batch_op.drop_column("document_version")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("version")
