"""explanations: each row's loss before and after, length bin and rank (score_chunk), and why
each selected row was picked (selection)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCORE_CHUNK = ("loss_before", "loss_after", "bins", "bin_ranks")
SELECTION = ("bins", "bin_ranks", "bin_quotas")


def upgrade() -> None:
    # recreate="never": on SQLite an ADD COLUMN, not a table rebuild. Nullable: rows written
    # before this revision have no explanations.
    with op.batch_alter_table("score_chunk", schema=None, recreate="never") as batch_op:
        for name in SCORE_CHUNK:
            batch_op.add_column(sa.Column(name, sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("selection", schema=None, recreate="never") as batch_op:
        for name in SELECTION:
            batch_op.add_column(sa.Column(name, sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("selection", schema=None) as batch_op:
        for name in reversed(SELECTION):
            batch_op.drop_column(name)
    with op.batch_alter_table("score_chunk", schema=None) as batch_op:
        for name in reversed(SCORE_CHUNK):
            batch_op.drop_column(name)
