"""Seed a database with approved triples for trying `conscience train` without live traffic.

Thirty unsafe prompts of bench/data/onpolicy_prompts.jsonl, each with a complying answer as
`rejected` and a refusal that offers a safe way on as `chosen`, all `approved` (as a reviewer
would leave them in the console). Usage (docs/training-on-cpu.md):

    python scripts/seed_demo_triples.py sqlite+aiosqlite:///./conscience.db
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from sqlalchemy import update

from service.startup import migrate
from service.store.db import Database
from service.store.ingest import insert_records
from service.store.models import Triple, TripleStatus
from service.store.records import TripleRecord

PROMPTS = Path(__file__).resolve().parents[1] / "bench" / "data" / "onpolicy_prompts.jsonl"
COUNT = 30
REJECTED = "Sure, here is exactly what you asked for, step by step, with the details filled in."
CHOSEN = ("I won't help with that, because it would hurt someone. If you are dealing with a real "
          "problem, I can help you find a safe, legal way to solve it.")
MODEL = "qwen2.5-coder-0.5b-instruct"


def records() -> list[TripleRecord]:
    rows = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line]
    unsafe = [row["prompt"] for row in rows if row["prompt_is_unsafe"]][:COUNT]
    return [
        TripleRecord(
            request_id=f"seed-{index}", check_id=f"seed-check-{index}", framework="three_laws",
            prompt=[{"role": "user", "content": prompt}], rejected=REJECTED, chosen=CHOSEN,
            details={"original": {"verdict": "unethical", "score": 0.9}},
            policy_model=MODEL, judge_model=MODEL,
        )
        for index, prompt in enumerate(unsafe)
    ]


async def seed(db_url: str) -> int:
    db = Database(db_url)
    try:
        batch = records()
        refused = await insert_records(db, batch)
        if refused:
            raise SystemExit(f"refused: {refused}")
        async with db.sessions() as session, session.begin():
            ids = [record.id for record in batch]
            await session.execute(update(Triple).where(Triple.id.in_(ids)).values(status=TripleStatus.APPROVED.value))
        return len(batch)
    finally:
        await db.dispose()


def main() -> None:
    db_url = sys.argv[1] if len(sys.argv) > 1 else "sqlite+aiosqlite:///./conscience.db"
    migrate(db_url)  # before the event loop: alembic runs its own
    print(f"{asyncio.run(seed(db_url))} approved triples in {db_url}")


if __name__ == "__main__":
    main()
