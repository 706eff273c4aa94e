from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from service.store.db import Database
from service.store.models import AdapterVersion, Triple, TripleStatus
from tests.trainer.conftest import seed_triples, set_status
from trainer.nightly.config import TrainConfig
from trainer.nightly.select import select_triples


def config(**changes: object) -> TrainConfig:
    return TrainConfig(base_model="unused", **changes)


async def test_only_approved_untrained_triples_by_default(db: Database) -> None:
    approved = await seed_triples(db, 3)
    pending = await seed_triples(db, 2, status=TripleStatus.PENDING)
    await seed_triples(db, 2, status=TripleStatus.REJECTED)
    await seed_triples(db, 1, status=TripleStatus.TRAINED)

    selected = await select_triples(db, config())
    assert {triple.id for triple in selected} == set(approved)
    assert [t.created_at for t in selected] == sorted(t.created_at for t in selected)

    with_pending = await select_triples(db, config(auto_approve=True))
    assert {triple.id for triple in with_pending} == set(approved) | set(pending)


async def test_a_triple_already_in_a_version_is_not_selected_again(db: Database) -> None:
    ids = await seed_triples(db, 2)
    async with db.sessions() as session, session.begin():
        session.add(AdapterVersion(id="v1", name="conscience-v1", base_model="b", path="/a"))
        await session.flush()
        await session.execute(update(Triple).where(Triple.id == ids[0]).values(trained_in_version="v1"))
    assert [triple.id for triple in await select_triples(db, config())] == [ids[1]]


async def test_framework_and_date_filters(db: Database) -> None:
    now = datetime.now(UTC)
    old = await seed_triples(db, 2, created_at=now - timedelta(days=3), framework="wwjd")
    recent = await seed_triples(
        db, 2, created_at=now - timedelta(hours=1), framework="three_laws"
    )
    await set_status(db, old + recent, TripleStatus.APPROVED)

    assert {t.id for t in await select_triples(db, config(framework="wwjd"))} == set(old)
    since = await select_triples(db, config(since=now - timedelta(days=1)))
    assert {t.id for t in since} == set(recent)
    # CLI dates are naive and mean UTC
    until = await select_triples(db, config(until=(now - timedelta(days=1)).replace(tzinfo=None)))
    assert {t.id for t in until} == set(old)
