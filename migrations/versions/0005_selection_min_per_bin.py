"""selection.min_per_bin: fewer length bins when the score picks are few (0: the paper's rule)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 02:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # recreate="never": on SQLite an ADD COLUMN, not a table rebuild.
    with op.batch_alter_table("selection", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("min_per_bin", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("selection", schema=None) as batch_op:
        batch_op.drop_column("min_per_bin")
