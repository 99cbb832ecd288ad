"""verify: the verification report of a job that asked for one (job.verify_report)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # recreate="never": on SQLite an ADD COLUMN, not a table rebuild. Nullable: jobs without
    # verification, and jobs written before this revision, have no report.
    with op.batch_alter_table("job", schema=None, recreate="never") as batch_op:
        batch_op.add_column(sa.Column("verify_report", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("verify_report")
