"""Multi-target jobs: job.validation_dataset_ids; scores and selections per target

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None, recreate="never") as batch_op:
        # None on older rows: their one target is validation_dataset_id.
        batch_op.add_column(sa.Column("validation_dataset_ids", sa.JSON(), nullable=True))
    with op.batch_alter_table("score_chunk", schema=None) as batch_op:
        batch_op.add_column(sa.Column("target", sa.Integer(), server_default="0", nullable=False))
        batch_op.drop_constraint("pk_score_chunk", type_="primary")
        batch_op.create_primary_key("pk_score_chunk", ["job_id", "target", "chunk"])
    with op.batch_alter_table("selection", schema=None) as batch_op:
        batch_op.add_column(sa.Column("target", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    # Scores and selections of targets after the first have no place in the old schema.
    op.execute(sa.text("DELETE FROM selection WHERE target <> 0"))
    op.execute(sa.text("DELETE FROM score_chunk WHERE target <> 0"))
    with op.batch_alter_table("selection", schema=None) as batch_op:
        batch_op.drop_column("target")
    with op.batch_alter_table("score_chunk", schema=None) as batch_op:
        batch_op.drop_constraint("pk_score_chunk", type_="primary")
        batch_op.create_primary_key("pk_score_chunk", ["job_id", "chunk"])
        batch_op.drop_column("target")
    # Never a copy of `job` on SQLite: dropping the old table would cascade to every job's rows.
    with op.batch_alter_table("job", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("validation_dataset_ids")
