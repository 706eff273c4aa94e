"""Reviewers mark blocked answers: checks.blocked_review (right | wrong) and checks.reviewed_at.

A blocked answer (flagged, no repair passed) has no triple to approve or reject, so its review
lives on its check: `right` (rightly blocked: the answer was harmful) or `wrong` (wrongly
blocked: the judge's false positive), with the time of the mark. Null until a reviewer marks it,
and for every other check. `conscience calibrate --reviewed` reads the marks as labels.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add several columns in one ALTER; PostgreSQL just alters.
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("blocked_review", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checks") as batch:
        batch.drop_column("reviewed_at")
        batch.drop_column("blocked_review")
