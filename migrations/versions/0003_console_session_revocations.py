"""Console logouts every worker and replica honours: console_session_revocations.

A logged-out console session's id (as its SHA-256) until the session would have expired;
console requests look their session up in it, so a cookie logged out on one worker or replica
is refused by all of them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "console_session_revocations",
        sa.Column("session_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("session_hash", name=op.f("pk_console_session_revocations")),
    )
    op.create_index(
        op.f("ix_console_session_revocations_expires_at"), "console_session_revocations", ["expires_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_console_session_revocations_expires_at"), table_name="console_session_revocations")
    op.drop_table("console_session_revocations")
