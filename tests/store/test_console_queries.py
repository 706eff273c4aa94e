"""The console's dashboard and blocked-answer queries agree on SQLite and PostgreSQL."""

from __future__ import annotations

from service.store import repository, stats
from service.store.db import Database
from service.store.ingest import insert_records
from service.store.repository import CheckFilter
from tests.store.factories import make_check


async def test_outcomes_scores_latency_and_blocked(db: Database) -> None:
    checks = [
        make_check(0, verdict="ethical", score=0.0, upstream_ms=10.0, judge_ms=1.0),
        make_check(1, verdict="ethical", score=0.26, upstream_ms=20.0, judge_ms=2.0),
        make_check(2, verdict="unethical", score=0.74, repaired=True, attempts=1,
                   upstream_ms=30.0, judge_ms=3.0, repair_ms=100.0),
        make_check(3, verdict="unethical", score=1.0, attempts=2, upstream_ms=40.0,
                   judge_ms=4.0, repair_ms=300.0, prompt=[{"role": "user", "content": "q"}],
                   answer="blocked text", drafts=[{"text": "d", "reason": "judge", "score": 0.9}]),
        make_check(4, verdict="unchecked", score=None, framework="wwjd", upstream_ms=50.0,
                   judge_ms=5.0),
    ]
    assert await insert_records(db, checks) == []
    everything = CheckFilter()
    async with db.sessions() as session:
        outcomes = await stats.outcome_counts(session, everything)
        histogram = await stats.score_histogram(session, everything, bins=4)
        latency = await stats.stage_latency(session, everything)
        blocked = await repository.list_blocked(session, everything, limit=10)
        wwjd = await stats.stage_latency(session, CheckFilter(framework="wwjd"))
        assert await repository.count_blocked(session, everything) == 1
    assert [(o.framework, o.checks, o.flagged, o.repaired, o.blocked, o.unchecked) for o in outcomes] == [
        ("three_laws", 4, 2, 1, 1, 0), ("wwjd", 1, 0, 0, 0, 1),
    ]
    assert histogram == [1, 1, 1, 1]  # 0.0 | 0.26 | 0.74 | 1.0 (the top edge is in the last bin)
    assert latency == {"upstream": [30.0, 50.0], "judge": [3.0, 5.0], "repair": [100.0, 300.0]}
    assert wwjd == {"upstream": [50.0, 50.0], "judge": [5.0, 5.0], "repair": [None, None]}
    [row] = blocked
    assert (row.answer, row.prompt, row.drafts[0]["text"]) == ("blocked text", [{"role": "user", "content": "q"}], "d")
