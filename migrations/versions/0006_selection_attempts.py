"""selection.attempts: how many runs a re-selection has had, so a failing one is capped

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # recreate="never": on SQLite an ADD COLUMN, not a table rebuild.
    with op.batch_alter_table("selection", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("selection", schema=None) as batch_op:
        batch_op.drop_column("attempts")
