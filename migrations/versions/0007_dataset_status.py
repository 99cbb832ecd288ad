"""dataset.status and its errors: references are validated after the answer, outside any
transaction; a dataset is `validating` until `ready` or `failed`

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # recreate="never": on SQLite plain ADD COLUMNs, not a table rebuild. Existing rows are ready.
    with op.batch_alter_table("dataset", schema=None, recreate="never") as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=20), server_default="ready", nullable=False)
        )
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("errors", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("validation_started_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("validation_attempts", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("dataset", schema=None) as batch_op:
        for column in (
            "validation_attempts",
            "validation_started_at",
            "errors",
            "error",
            "status",
        ):
            batch_op.drop_column(column)
