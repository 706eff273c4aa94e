"""Blocked answers keep their text: checks.prompt, checks.answer, checks.drafts (nullable).

Filled only for an answer the judge flagged and no repair passed (it has no triple to hold its
text); null for every other check, so passed answers' text is still never stored.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add several columns in one ALTER; PostgreSQL just alters.
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("prompt", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("answer", sa.Text(), nullable=True))
        batch.add_column(sa.Column("drafts", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("drafts")
        batch.drop_column("answer")
        batch.drop_column("prompt")
