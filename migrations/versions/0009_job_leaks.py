"""job_leak: the leakage check's flagged pool rows; job.leak_count

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("job", sa.Column("leak_count", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "job_leak",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("pool_index", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("match_index", sa.BigInteger(), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("excluded", sa.Boolean(), nullable=False),
        sa.Column("pool_preview", sa.Text(), nullable=False),
        sa.Column("match_preview", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["job.id"], name=op.f("fk_job_leak_job_id_job"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_leak")),
    )
    op.create_index(op.f("ix_job_leak_job_id"), "job_leak", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_job_leak_job_id"), table_name="job_leak")
    op.drop_table("job_leak")
    op.drop_column("job", "leak_count")
