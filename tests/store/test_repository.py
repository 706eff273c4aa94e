"""Repository queries whose edges the admin API tests do not reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from service.store import credentials, repository
from service.store.db import Database
from service.store.ingest import insert_records
from service.store.models import AdapterVersion, Triple, TripleStatus
from service.store.repository import TripleFilter
from tests.store.factories import make_triple

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_paged_iteration_visits_each_match_once_in_order(db: Database) -> None:
    # Pairs share a timestamp, so pages must break ties by id to neither skip nor repeat.
    records = [
        make_triple(index, created_at=T0 + timedelta(seconds=index // 2)) for index in range(11)
    ]
    assert await insert_records(db, records) == []
    async with db.sessions.begin() as session:
        await repository.set_triple_status(
            session, [r.id for r in records[1:]], TripleStatus.APPROVED
        )

    async with db.sessions() as session:
        seen = [
            triple.id
            async for triple in repository.iter_triples(
                session, TripleFilter(status=TripleStatus.APPROVED), page_size=3
            )
        ]
    expected = sorted(records[1:], key=lambda r: (r.created_at, r.id))
    assert seen == [r.id for r in expected]


async def test_the_trainers_selection_is_a_filter_of_several_statuses_and_untrained(db: Database) -> None:
    approved, pending, rejected, trained = (make_triple(index, created_at=T0 + timedelta(minutes=index))
                                            for index in range(4))
    assert await insert_records(db, [approved, pending, rejected, trained]) == []
    async with db.sessions.begin() as session:
        await repository.set_triple_status(session, [approved.id, trained.id], TripleStatus.APPROVED)
        await repository.set_triple_status(session, [rejected.id], TripleStatus.REJECTED)
        session.add(AdapterVersion(id="v1", name="conscience-v1", base_model="b", path="/a"))
        await session.flush()
        await session.execute(update(Triple).where(Triple.id == trained.id).values(trained_in_version="v1"))

    where = TripleFilter(status=(TripleStatus.APPROVED, TripleStatus.PENDING), untrained=True,
                         since=(T0 - timedelta(hours=1)).replace(tzinfo=None))  # naive: UTC
    async with db.sessions() as session:
        assert [t.id async for t in repository.iter_triples(session, where)] == [approved.id, pending.id]
        assert await repository.count_triples(session, where) == 2


async def test_revoking_twice_keeps_the_first_time(db: Database) -> None:
    async with db.sessions.begin() as session:
        key, _ = await credentials.create_api_key(session, "dave")
    async with db.sessions.begin() as session:
        first = await credentials.revoke_api_key(session, key.id)
    async with db.sessions.begin() as session:
        second = await credentials.revoke_api_key(session, key.id)
    assert first is not None and second is not None
    assert second.revoked_at == first.revoked_at
    async with db.sessions() as session:
        assert await credentials.revoke_api_key(session, "unknown") is None
