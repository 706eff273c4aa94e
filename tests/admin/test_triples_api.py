"""Triple review, listing and export through the admin API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from fastapi import FastAPI

from service.store.records import TripleRecord
from service.store.writer import RecordWriter
from tests.admin.conftest import ADMIN_KEY, store
from tests.store.factories import make_triple

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def triples_over_time(count: int) -> list[TripleRecord]:
    return [
        make_triple(
            index,
            created_at=T0 + timedelta(minutes=index),
            framework="wwjd" if index % 2 else "three_laws",
        )
        for index in range(count)
    ]


def assert_openai_error(
    response: httpx.Response, status: int, error_type: str
) -> dict[str, object]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == error_type
    assert error["message"]
    return error


async def test_admin_key_is_required(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/admin/triples"), 401, "authentication_error")
    wrong = {"Authorization": "Bearer not-the-admin-key"}
    response = await client.get("/admin/triples", headers=wrong)
    assert_openai_error(response, 401, "authentication_error")
    right = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert (await client.get("/admin/triples", headers=right)).status_code == 200


async def test_admin_api_is_disabled_without_an_admin_key(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    app.state.settings = app.state.settings.updated({"security.admin_key": None})
    response = await client.get("/admin/triples", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert_openai_error(response, 403, "permission_error")


async def test_list_filters_and_pages_newest_first(
    admin: httpx.AsyncClient, writer: RecordWriter
) -> None:
    records = triples_over_time(10)
    await store(writer, records)

    everything = (await admin.get("/admin/triples")).json()
    assert everything["total"] == 10
    assert [item["id"] for item in everything["data"]] == [r.id for r in reversed(records)]
    first = everything["data"][-1]
    assert first["prompt"] == records[0].prompt
    assert first["status"] == "pending"
    assert datetime.fromisoformat(first["created_at"]) == records[0].created_at

    page = (await admin.get("/admin/triples", params={"limit": 3, "offset": 3})).json()
    assert [item["id"] for item in page["data"]] == [r.id for r in reversed(records)][3:6]
    assert (page["total"], page["limit"], page["offset"]) == (10, 3, 3)

    window = {
        "since": (T0 + timedelta(minutes=2)).isoformat(),
        "until": (T0 + timedelta(minutes=6)).isoformat(),
    }
    windowed = (await admin.get("/admin/triples", params={**window, "framework": "wwjd"})).json()
    assert [item["id"] for item in windowed["data"]] == [records[5].id, records[3].id]


async def test_single_and_bulk_review(admin: httpx.AsyncClient, writer: RecordWriter) -> None:
    records = triples_over_time(6)
    await store(writer, records)

    approved = await admin.post(f"/admin/triples/{records[0].id}/approve")
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["reviewed_at"] is not None
    rejected = await admin.post(f"/admin/triples/{records[1].id}/reject")
    assert rejected.json()["status"] == "rejected"

    bulk = await admin.post(
        "/admin/triples/review", json={"ids": [records[4].id, records[2].id], "status": "approved"}
    )
    assert bulk.status_code == 200
    assert [item["id"] for item in bulk.json()["data"]] == [records[4].id, records[2].id]

    listed = (await admin.get("/admin/triples", params={"status": "approved"})).json()
    assert {item["id"] for item in listed["data"]} == {records[0].id, records[2].id, records[4].id}
    pending = (await admin.get("/admin/triples", params={"status": "pending"})).json()
    assert {item["id"] for item in pending["data"]} == {records[3].id, records[5].id}


async def test_unknown_ids_are_404_and_change_nothing(
    admin: httpx.AsyncClient, writer: RecordWriter
) -> None:
    records = triples_over_time(2)
    await store(writer, records)

    response = await admin.post("/admin/triples/nope/approve")
    error = assert_openai_error(response, 404, "not_found_error")
    assert "nope" in str(error["message"])
    response = await admin.post(
        "/admin/triples/review", json={"ids": [records[0].id, "missing"], "status": "rejected"}
    )
    assert "missing" in str(assert_openai_error(response, 404, "not_found_error")["message"])
    still = (await admin.get("/admin/triples", params={"status": "pending"})).json()
    assert still["total"] == 2


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/admin/triples/review", {"json": {"ids": ["x"], "status": "trained"}}),
        ("post", "/admin/triples/review", {"json": {"ids": [], "status": "approved"}}),
        ("get", "/admin/triples", {"params": {"status": "maybe"}}),
        ("get", "/admin/triples", {"params": {"limit": 0}}),
        ("get", "/admin/stats/verdicts", {"params": {"bucket": "week"}}),
    ],
)
async def test_bad_input_is_400(
    admin: httpx.AsyncClient, method: str, path: str, payload: dict[str, object]
) -> None:
    response = await getattr(admin, method)(path, **payload)
    assert_openai_error(response, 400, "invalid_request_error")


async def test_export_is_approved_triples_in_trl_preference_format(
    admin: httpx.AsyncClient, writer: RecordWriter
) -> None:
    records = triples_over_time(5)
    await store(writer, records)
    for record in (records[3], records[1], records[2]):
        await admin.post(f"/admin/triples/{record.id}/approve")
    await admin.post(f"/admin/triples/{records[2].id}/reject")

    response = await admin.get("/admin/triples/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert lines == [
        {
            "prompt": record.prompt,
            "chosen": [{"role": "assistant", "content": record.chosen}],
            "rejected": [{"role": "assistant", "content": record.rejected}],
        }
        for record in (records[1], records[3])
    ]
    other_framework = await admin.get("/admin/triples/export", params={"framework": "three_laws"})
    assert other_framework.content == b""


async def test_export_is_accepted_by_trl(admin: httpx.AsyncClient, writer: RecordWriter) -> None:
    data_utils = pytest.importorskip("trl.data_utils")
    records = triples_over_time(2)
    await store(writer, records)
    review = {"ids": [r.id for r in records], "status": "approved"}
    await admin.post("/admin/triples/review", json=review)

    lines = (await admin.get("/admin/triples/export")).content.splitlines()
    assert len(lines) == 2
    for line in lines:
        example = orjson.loads(line)
        assert data_utils.is_conversational(example)
        assert data_utils.is_conversational_from_value(example) is False
