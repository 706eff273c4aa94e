"""The adapter registry as the serving side reads it: which version is active now."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import AdapterStatus, AdapterVersion


async def active_adapter(session: AsyncSession) -> AdapterVersion | None:
    """The active version; should two ever be marked active, the latest activation wins."""
    query = (
        select(AdapterVersion)
        .where(AdapterVersion.status == AdapterStatus.ACTIVE.value)
        .order_by(AdapterVersion.activated_at.desc().nulls_last(), AdapterVersion.created_at.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()
