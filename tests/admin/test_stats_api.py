"""Verdict counts over time, per framework, through the admin API."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import httpx

from service.store.records import CheckRecord
from service.store.writer import RecordWriter
from tests.admin.conftest import store
from tests.store.factories import make_check

T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)
VERDICTS = ("ethical", "unethical", "neutral")
FRAMEWORKS = ("three_laws", "wwjd")


def checks_over_a_night() -> list[CheckRecord]:
    """Every 7 minutes for 5 hours, crossing midnight UTC, and one stamped in another time zone."""
    checks = [
        make_check(
            index,
            created_at=T0 + timedelta(minutes=7 * index),
            verdict=VERDICTS[index % 3],
            framework=FRAMEWORKS[index % 2],
        )
        for index in range(43)
    ]
    # 09:30 in Tokyo is 00:30 UTC: it must land in the UTC hour and day, not Tokyo's.
    tokyo = datetime(2026, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=9)))
    checks.append(make_check(99, created_at=tokyo, verdict="ethical", framework="wwjd"))
    return checks


def expected_counts(checks: list[CheckRecord], hours: int) -> Counter[tuple[str, str, str]]:
    def bucket(moment: datetime) -> datetime:
        moment = moment.astimezone(UTC)
        if hours == 1:
            return moment.replace(minute=0, second=0, microsecond=0)
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)

    return Counter((bucket(c.created_at).isoformat(), c.framework, c.verdict) for c in checks)


def as_counter(body: dict[str, object]) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for item in body["data"]:  # type: ignore[union-attr]
        start = datetime.fromisoformat(item["bucket_start"]).isoformat()
        counts[(start, item["framework"], item["verdict"])] = item["count"]
    return counts


async def test_hourly_and_daily_counts(admin: httpx.AsyncClient, writer: RecordWriter) -> None:
    checks = checks_over_a_night()
    await store(writer, checks)

    hourly = (await admin.get("/admin/stats/verdicts", params={"bucket": "hour"})).json()
    assert hourly["bucket"] == "hour"
    assert as_counter(hourly) == expected_counts(checks, hours=1)
    starts = [item["bucket_start"] for item in hourly["data"]]
    assert starts == sorted(starts)

    daily = (await admin.get("/admin/stats/verdicts", params={"bucket": "day"})).json()
    assert as_counter(daily) == expected_counts(checks, hours=24)
    assert {item["bucket_start"][:10] for item in daily["data"]} == {"2026-03-01", "2026-03-02"}


async def test_window_and_framework_filters(admin: httpx.AsyncClient, writer: RecordWriter) -> None:
    checks = checks_over_a_night()
    await store(writer, checks)
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    params = {
        "bucket": "hour", "since": since.isoformat(), "until": until.isoformat(),
        "framework": "wwjd",
    }

    body = (await admin.get("/admin/stats/verdicts", params=params)).json()
    wanted = [c for c in checks if since <= c.created_at < until and c.framework == "wwjd"]
    assert wanted
    assert as_counter(body) == expected_counts(wanted, hours=1)
