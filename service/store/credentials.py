"""Who may call: the proxy's API keys (created, listed, revoked) and the console's revoked
sessions. Functions take an `AsyncSession` and never commit, as service/store/repository.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.keys import generate_key, visible_prefix
from service.store.models import ApiKey, ConsoleSessionRevocation
from service.store.records import utcnow

# --- API keys --------------------------------------------------------------------------------


async def create_api_key(
    session: AsyncSession, name: str, *, framework: str | None = None, mode: str | None = None
) -> tuple[ApiKey, str]:
    """A new key row and the plaintext key, which exists nowhere else: show it once."""
    plaintext, key_hash = generate_key()
    key = ApiKey(
        name=name, prefix=visible_prefix(plaintext), key_hash=key_hash,
        framework=framework, mode=mode,
    )
    session.add(key)
    await session.flush()
    return key, plaintext


async def list_api_keys(session: AsyncSession) -> Sequence[ApiKey]:
    """Every key, revoked ones included, newest first."""
    query = select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)
    return (await session.scalars(query)).all()


async def active_api_keys(session: AsyncSession) -> Sequence[ApiKey]:
    return (await session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))).all()


async def revoke_api_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    """Mark a key revoked (once: a second revoke keeps the first time). None if unknown."""
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return await session.get(ApiKey, key_id, populate_existing=True)


async def revoke_console_session(session: AsyncSession, session_hash: str, expires_at: datetime) -> None:
    """Record a console logout (twice, from two workers, is once) and forget the revocations
    of sessions that have expired anyway."""
    now = utcnow()
    await session.execute(delete(ConsoleSessionRevocation).where(ConsoleSessionRevocation.expires_at <= now))
    if expires_at <= now:
        return
    insert = sqlite.insert if session.bind.dialect.name == "sqlite" else postgresql.insert
    await session.execute(
        insert(ConsoleSessionRevocation)
        .values(session_hash=session_hash, expires_at=expires_at)
        .on_conflict_do_nothing(index_elements=["session_hash"])
    )


async def console_session_revoked(session: AsyncSession, session_hash: str) -> bool:
    found = await session.execute(
        select(ConsoleSessionRevocation.session_hash).where(ConsoleSessionRevocation.session_hash == session_hash)
    )
    return found.first() is not None
