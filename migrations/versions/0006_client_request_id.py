"""The client's request id, kept apart from ours: checks.client_request_id and triples.client_request_id.

Before this, a client's X-Request-Id became the request id itself, so a client chose the id of
the records its request left (and could make them collide with another request's). Now
`request_id` is always ours, and the id the client offers (X-Client-Request-Id, as OpenAI
names it) is stored beside it for correlation. Null when the client sent none, and for rows
older than this migration (their `request_id` may still be a client's).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Batch mode: SQLite alters a table by copying it; PostgreSQL just alters.
    with op.batch_alter_table("checks") as batch:
        batch.add_column(sa.Column("client_request_id", sa.String(length=128), nullable=True))
        batch.create_index("ix_checks_client_request_id", ["client_request_id"])
    with op.batch_alter_table("triples") as batch:
        batch.add_column(sa.Column("client_request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("triples") as batch:
        batch.drop_column("client_request_id")
    with op.batch_alter_table("checks") as batch:
        batch.drop_index("ix_checks_client_request_id")
        batch.drop_column("client_request_id")
