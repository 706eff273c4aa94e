"""Which logged triples a run trains on: reviewed (or, with auto-approve, pending), untrained."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.store import repository
from service.store.db import Database
from service.store.models import TripleStatus
from service.store.repository import TripleFilter
from trainer.nightly.config import TrainConfig


@dataclass(frozen=True, slots=True)
class SelectedTriple:
    id: str
    framework: str
    prompt: list[dict[str, Any]]
    chosen: str
    rejected: str
    created_at: datetime


def eligible_statuses(auto_approve: bool) -> tuple[TripleStatus, ...]:
    return (TripleStatus.APPROVED, TripleStatus.PENDING) if auto_approve else (TripleStatus.APPROVED,)


def selection(config: TrainConfig) -> TripleFilter:
    """The store's filter for this run: eligible, untrained, the run's framework and times."""
    return TripleFilter(
        status=eligible_statuses(config.auto_approve), framework=config.framework,
        since=config.since, until=config.until, untrained=True,
    )


async def select_triples(db: Database, config: TrainConfig) -> list[SelectedTriple]:
    """The triples this run may use, oldest first (ties broken by id, so the order is stable),
    read through the store's filter as the admin API and `conscience triples` read them."""
    async with db.sessions() as session:
        return [
            SelectedTriple(
                id=row.id, framework=row.framework, prompt=row.prompt, chosen=row.chosen,
                rejected=row.rejected, created_at=row.created_at,
            )
            async for row in repository.iter_triples(session, selection(config))
        ]
