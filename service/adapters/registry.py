"""The `adapter_versions` registry: naming, recording, activation and rollback.

The one place that reads and writes `adapter_versions`: the proxy (which version serves), the
trainer (recording new versions) and both admin doors (CLI and HTTP) all go through here.

A version row is immutable except for its status: `candidate` (trained, passed the gate, not
serving yet), `active` (the one the proxy serves; at most one), `retired` (served before; a
rollback target), `failed` (did not pass the gate; never served).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.db import Database
from service.store.models import AdapterStatus, AdapterVersion, Triple, TripleStatus
from service.store.records import utcnow

# asyncpg caps a statement at 32767 parameters; triples are marked in slices well below that.
_MARK_SLICE = 1000


class RegistryError(Exception):
    """An operator's request the registry cannot honour (unknown name, failed version, …)."""


class UnknownVersion(RegistryError):
    """No version has the name asked for."""


@dataclass(frozen=True, slots=True)
class VersionDraft:
    name: str
    base_model: str
    path: Path
    parent_id: str | None
    passed_gate: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    triple_count: int = 0
    dataset_hash: str | None = None
    failure_reason: str | None = None


async def active_adapter(session: AsyncSession) -> AdapterVersion | None:
    """The active version; should two ever be marked active, the latest activation wins."""
    query = (
        select(AdapterVersion)
        .where(AdapterVersion.status == AdapterStatus.ACTIVE.value)
        .order_by(AdapterVersion.activated_at.desc().nulls_last(), AdapterVersion.created_at.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


def version_number(name: str, prefix: str) -> int | None:
    match = re.fullmatch(rf"{re.escape(prefix)}-v(\d+)", name)
    return int(match.group(1)) if match else None


async def next_version_name(db: Database, adapters_dir: Path, prefix: str) -> str:
    """`<prefix>-v<N+1>`, N the highest number in the registry or on disk.

    Counting directories too means an adapter renamed into place by a run that died before
    recording it is never overwritten or reused under its name.
    """
    async with db.sessions() as session:
        names = list(await session.scalars(select(AdapterVersion.name)))
    if adapters_dir.is_dir():
        names.extend(path.name for path in adapters_dir.iterdir())
    numbers = [number for name in names if (number := version_number(name, prefix)) is not None]
    return f"{prefix}-v{max(numbers, default=0) + 1}"


async def list_versions(db: Database) -> list[AdapterVersion]:
    """Every version, newest first."""
    async with db.sessions() as session:
        query = select(AdapterVersion).order_by(
            AdapterVersion.created_at.desc(), AdapterVersion.name.desc()
        )
        return list(await session.scalars(query))


async def active_version(db: Database) -> AdapterVersion | None:
    async with db.sessions() as session:
        return await active_adapter(session)


async def get_version(db: Database, name: str) -> AdapterVersion:
    async with db.sessions() as session:
        version = await session.scalar(select(AdapterVersion).where(AdapterVersion.name == name))
    if version is None:
        raise UnknownVersion(f"no adapter version named {name!r}")
    return version


async def record_version(
    db: Database, draft: VersionDraft, trained_triple_ids: Sequence[str]
) -> AdapterVersion:
    """Insert the version and, in the same transaction, mark its triples `trained`.

    A version that failed the gate consumes no triples: they stay eligible for the next run.
    """
    version = AdapterVersion(
        name=draft.name,
        base_model=draft.base_model,
        path=str(draft.path),
        parent_id=draft.parent_id,
        status=(AdapterStatus.CANDIDATE if draft.passed_gate else AdapterStatus.FAILED).value,
        metrics=draft.metrics,
        triple_count=draft.triple_count,
        dataset_hash=draft.dataset_hash,
        failure_reason=draft.failure_reason,
    )
    async with db.sessions() as session, session.begin():
        session.add(version)
        await session.flush()
        if draft.passed_gate:
            for start in range(0, len(trained_triple_ids), _MARK_SLICE):
                await session.execute(
                    update(Triple)
                    .where(Triple.id.in_(trained_triple_ids[start : start + _MARK_SLICE]))
                    .values(status=TripleStatus.TRAINED.value, trained_in_version=version.id)
                )
    return version


async def mark_active(db: Database, name: str) -> AdapterVersion:
    """Make `name` the only active version; the previously active one becomes `retired`."""
    async with db.sessions() as session, session.begin():
        if not db.is_sqlite:
            # Serialise activations: two concurrent ones could each retire the old version and
            # leave two actives. SQLite already serialises writers.
            await session.execute(text("LOCK TABLE adapter_versions IN EXCLUSIVE MODE"))
        version = await session.scalar(select(AdapterVersion).where(AdapterVersion.name == name))
        if version is None:
            raise UnknownVersion(f"no adapter version named {name!r}")
        if version.status == AdapterStatus.FAILED.value:
            raise RegistryError(
                f"{name} failed the evaluation gate ({version.failure_reason}); "
                "it cannot be activated"
            )
        await session.execute(
            update(AdapterVersion)
            .where(
                AdapterVersion.status == AdapterStatus.ACTIVE.value,
                AdapterVersion.id != version.id,
            )
            .values(status=AdapterStatus.RETIRED.value)
        )
        if version.status != AdapterStatus.ACTIVE.value:
            version.status = AdapterStatus.ACTIVE.value
            version.activated_at = utcnow()
    return version


async def rollback_target(db: Database) -> AdapterVersion:
    """The version the active one was trained from: what a rollback re-activates."""
    active = await active_version(db)
    if active is None:
        raise RegistryError("no adapter version is active; nothing to roll back")
    if active.parent_id is None:
        raise RegistryError(
            f"{active.name} was trained from the base model; there is no earlier version to "
            "roll back to (activate another version by name instead)"
        )
    async with db.sessions() as session:
        parent = await session.get(AdapterVersion, active.parent_id)
    assert parent is not None  # a foreign key
    return parent
