from __future__ import annotations

import pytest

from service.store.db import Database
from trainer.common.lock import TrainingLockHeld, training_lock


async def test_a_second_holder_is_refused_until_the_first_releases(db_url: str) -> None:
    first, second = Database(db_url), Database(db_url)
    try:
        async with training_lock(first):
            with pytest.raises(TrainingLockHeld, match="another training run"):
                async with training_lock(second):
                    pytest.fail("two runs held the lock at once")
        async with training_lock(second):
            pass
    finally:
        await first.dispose()
        await second.dispose()


async def test_an_in_memory_sqlite_database_is_refused() -> None:
    db = Database("sqlite+aiosqlite://")
    try:
        with pytest.raises(ValueError, match="in-memory"):
            async with training_lock(db):
                pass
    finally:
        await db.dispose()
