"""The threshold each check was judged at: checks.threshold.

Thresholds differ by judge model, style and framework (calibrated ones, a latent probe's own),
so a score means flagged or not only beside the threshold it was judged at; the console draws
each in use over the score histogram. Null for checks written before this revision, and for
answers whose verdict failed (unchecked).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("checks", sa.Column("threshold", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checks") as batch:  # SQLite drops a column by copying the table
        batch.drop_column("threshold")
