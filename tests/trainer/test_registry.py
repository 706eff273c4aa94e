from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from service.adapters.registry import (
    RegistryError,
    VersionDraft,
    get_version,
    list_versions,
    mark_active,
    next_version_name,
    record_version,
    rollback_target,
)
from service.store.db import Database
from service.store.models import AdapterStatus, AdapterVersion, Triple, TripleStatus
from tests.trainer.conftest import seed_triples


async def add_version(
    db: Database, name: str, *, parent: AdapterVersion | None = None, passed: bool = True,
    triple_ids: list[str] | None = None,
) -> AdapterVersion:
    draft = VersionDraft(
        name=name,
        base_model="base",
        path=Path("/adapters") / name,
        parent_id=parent.id if parent else None,
        passed_gate=passed,
        metrics={"note": name},
        triple_count=len(triple_ids or []),
        dataset_hash="0" * 64,
        failure_reason=None if passed else "refusals rose",
    )
    return await record_version(db, draft, triple_ids or [])


async def triples_by_id(db: Database) -> dict[str, Triple]:
    async with db.sessions() as session:
        return {triple.id: triple for triple in await session.scalars(select(Triple))}


async def test_names_count_up_past_registry_and_disk(db: Database, tmp_path: Path) -> None:
    assert await next_version_name(db, tmp_path / "missing", "conscience") == "conscience-v1"
    await add_version(db, "conscience-v1")
    await add_version(db, "conscience-v3")
    await add_version(db, "other-v9")
    assert await next_version_name(db, tmp_path, "conscience") == "conscience-v4"
    # an adapter renamed into place by a run that died before recording it
    (tmp_path / "conscience-v5").mkdir()
    assert await next_version_name(db, tmp_path, "conscience") == "conscience-v6"


async def test_recording_a_version_marks_its_triples_in_the_same_transaction(db: Database) -> None:
    trained, left_out = await seed_triples(db, 3), await seed_triples(db, 1)
    version = await add_version(db, "conscience-v1", triple_ids=trained)

    stored = await triples_by_id(db)
    for triple_id in trained:
        assert stored[triple_id].status == TripleStatus.TRAINED
        assert stored[triple_id].trained_in_version == version.id
    assert stored[left_out[0]].status == TripleStatus.APPROVED
    assert stored[left_out[0]].trained_in_version is None
    recorded = await get_version(db, "conscience-v1")
    assert recorded.status == AdapterStatus.CANDIDATE and recorded.triple_count == 3


async def test_a_failed_version_consumes_no_triples(db: Database) -> None:
    ids = await seed_triples(db, 2)
    await add_version(db, "conscience-v1", passed=False, triple_ids=ids)
    assert all(t.status == TripleStatus.APPROVED for t in (await triples_by_id(db)).values())
    failed = await get_version(db, "conscience-v1")
    assert failed.status == AdapterStatus.FAILED and failed.failure_reason == "refusals rose"
    with pytest.raises(RegistryError, match="failed the evaluation gate"):
        await mark_active(db, "conscience-v1")


async def test_activation_retires_the_previous_version_and_rollback_returns_to_the_parent(
    db: Database,
) -> None:
    first = await add_version(db, "conscience-v1")
    await mark_active(db, "conscience-v1")
    second = await add_version(db, "conscience-v2", parent=first)
    activated = await mark_active(db, "conscience-v2")
    assert activated.activated_at is not None

    statuses = {version.name: version.status for version in await list_versions(db)}
    assert statuses == {"conscience-v1": "retired", "conscience-v2": "active"}
    assert (await rollback_target(db)).id == first.id

    await mark_active(db, "conscience-v1")
    statuses = {version.name: version.status for version in await list_versions(db)}
    assert statuses == {"conscience-v1": "active", "conscience-v2": "retired"}
    with pytest.raises(RegistryError, match="no earlier version"):
        await rollback_target(db)
    assert second.parent_id == first.id


async def test_operator_mistakes_are_clear_errors(db: Database) -> None:
    with pytest.raises(RegistryError, match="nothing to roll back"):
        await rollback_target(db)
    with pytest.raises(RegistryError, match="no adapter version named 'conscience-v9'"):
        await mark_active(db, "conscience-v9")
    with pytest.raises(RegistryError, match="no adapter version named"):
        await get_version(db, "conscience-v9")
