"""Which logged triples a run trains on: reviewed (or, with auto-approve, pending), untrained."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from service.store.db import Database
from service.store.models import Triple, TripleStatus
from trainer.nightly.config import TrainConfig


@dataclass(frozen=True, slots=True)
class SelectedTriple:
    id: str
    framework: str
    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str
    created_at: datetime


def eligible_statuses(auto_approve: bool) -> list[str]:
    statuses = [TripleStatus.APPROVED.value]
    if auto_approve:
        statuses.append(TripleStatus.PENDING.value)
    return statuses


async def select_triples(db: Database, config: TrainConfig) -> list[SelectedTriple]:
    """The triples this run may use, oldest first (ties broken by id, so the order is stable)."""
    query = select(Triple).where(
        Triple.status.in_(eligible_statuses(config.auto_approve)),
        Triple.trained_in_version.is_(None),
    )
    if config.framework is not None:
        query = query.where(Triple.framework == config.framework)
    if config.since is not None:
        query = query.where(Triple.created_at >= config.since)
    if config.until is not None:
        query = query.where(Triple.created_at < config.until)
    query = query.order_by(Triple.created_at, Triple.id)
    async with db.sessions() as session:
        rows = (await session.scalars(query)).all()
    return [
        SelectedTriple(
            id=row.id,
            framework=row.framework,
            prompt=row.prompt,
            chosen=row.chosen,
            rejected=row.rejected,
            created_at=row.created_at,
        )
        for row in rows
    ]
