"""Initial schema: checks, triples, api_keys, adapter_versions.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _timestamp(name: str, *, nullable: bool) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "adapter_versions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("base_model", sa.String(256), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("triple_count", sa.Integer(), nullable=False),
        sa.Column("dataset_hash", sa.String(64), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("activated_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["adapter_versions.id"],
            name=op.f("fk_adapter_versions_parent_id_adapter_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adapter_versions")),
        sa.UniqueConstraint("name", name=op.f("uq_adapter_versions_name")),
    )
    op.create_index(op.f("ix_adapter_versions_status"), "adapter_versions", ["status"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("framework", sa.String(64), nullable=True),
        sa.Column("mode", sa.String(16), nullable=True),
        _timestamp("created_at", nullable=False),
        _timestamp("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )

    op.create_table(
        "checks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.Column("endpoint", sa.String(16), nullable=False),
        sa.Column("framework", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("repaired", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("choice_index", sa.Integer(), nullable=False),
        sa.Column("policy_model", sa.String(256), nullable=False),
        sa.Column("judge_model", sa.String(256), nullable=False),
        sa.Column("upstream_ms", sa.Float(), nullable=False),
        sa.Column("judge_ms", sa.Float(), nullable=False),
        sa.Column("repair_ms", sa.Float(), nullable=False),
        sa.Column("api_key_id", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checks")),
    )
    for column in ("created_at", "framework", "request_id", "verdict"):
        op.create_index(op.f(f"ix_checks_{column}"), "checks", [column])

    op.create_table(
        "triples",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("check_id", sa.String(32), nullable=False),
        _timestamp("created_at", nullable=False),
        sa.Column("framework", sa.String(64), nullable=False),
        sa.Column("prompt", sa.JSON(), nullable=False),
        sa.Column("rejected", sa.Text(), nullable=False),
        sa.Column("chosen", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("policy_model", sa.String(256), nullable=False),
        sa.Column("judge_model", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _timestamp("reviewed_at", nullable=True),
        sa.Column("trained_in_version", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["trained_in_version"], ["adapter_versions.id"],
            name=op.f("fk_triples_trained_in_version_adapter_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triples")),
    )
    op.create_index(op.f("ix_triples_framework"), "triples", ["framework"])
    op.create_index(op.f("ix_triples_request_id"), "triples", ["request_id"])
    op.create_index("ix_triples_status_created", "triples", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("triples")
    op.drop_table("checks")
    op.drop_table("api_keys")
    op.drop_table("adapter_versions")
