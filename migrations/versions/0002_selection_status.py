"""Selections can be pending (re-selection by a worker); score chunks flag the base subset

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 20:57:21.908949
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("selection", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), server_default="ready", nullable=False)
        )
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    with op.batch_alter_table("score_chunk", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flags", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("score_chunk", schema=None) as batch_op:
        batch_op.drop_column("flags")
    with op.batch_alter_table("selection", schema=None) as batch_op:
        batch_op.drop_column("error")
        batch_op.drop_column("status")
