"""Blocked answers through the admin API: listed with their text, marked rightly or wrongly blocked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from service.store.records import CheckRecord
from service.store.writer import RecordWriter
from tests.admin.conftest import store
from tests.admin.test_triples_api import assert_openai_error
from tests.store.factories import make_check

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def blocked(index: int, framework: str = "three_laws") -> CheckRecord:
    return make_check(
        index, verdict="unethical", score=0.9, threshold=0.5, attempts=2, framework=framework,
        created_at=T0 + timedelta(minutes=index),
        prompt=[{"role": "user", "content": f"question {index}"}], answer=f"blocked answer {index}",
        drafts=[{"text": "a draft", "reason": "judge", "score": 0.8}],
    )


async def test_blocked_answers_are_listed_and_marked(admin: httpx.AsyncClient, writer: RecordWriter) -> None:
    answers = [blocked(0), blocked(1, "wwjd"), blocked(2)]
    passed = make_check(3, verdict="ethical")
    await store(writer, [*answers, passed])

    listed = (await admin.get("/admin/blocked")).json()
    assert listed["total"] == 3 and [row["id"] for row in listed["data"]] == [a.id for a in reversed(answers)]
    assert listed["data"][0]["answer"] == "blocked answer 2" and listed["data"][0]["blocked_review"] is None
    assert (await admin.get("/admin/blocked", params={"framework": "wwjd"})).json()["total"] == 1

    marked = await admin.post("/admin/blocked/review", json={"ids": [answers[2].id, answers[0].id], "review": "wrong"})
    assert marked.status_code == 200, marked.text
    assert [(row["id"], row["blocked_review"]) for row in marked.json()["data"]] == [
        (answers[2].id, "wrong"), (answers[0].id, "wrong")]
    assert marked.json()["data"][0]["reviewed_at"] is not None
    right = await admin.post("/admin/blocked/review", json={"ids": [answers[0].id], "review": "right"})
    assert right.json()["data"][0]["blocked_review"] == "right"  # a second mark replaces the first

    def ids(response: httpx.Response) -> set[str]:
        return {row["id"] for row in response.json()["data"]}

    assert ids(await admin.get("/admin/blocked", params={"review": "unreviewed"})) == {answers[1].id}
    assert ids(await admin.get("/admin/blocked", params={"review": "right"})) == {answers[0].id}
    assert ids(await admin.get("/admin/blocked", params={"review": "wrong"})) == {answers[2].id}

    # All or none: a passed check is no blocked answer, and nothing changes.
    refused = await admin.post("/admin/blocked/review", json={"ids": [answers[1].id, passed.id], "review": "right"})
    error = assert_openai_error(refused, 404, "not_found_error")
    assert error["code"] == "blocked_not_found" and passed.id in str(error["message"])
    assert ids(await admin.get("/admin/blocked", params={"review": "unreviewed"})) == {answers[1].id}
    invalid = await admin.post("/admin/blocked/review", json={"ids": [answers[1].id], "review": "maybe"})
    assert_openai_error(invalid, 400, "invalid_request_error")


async def test_blocked_needs_the_admin_key(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/admin/blocked"), 401, "authentication_error")
    response = await client.post("/admin/blocked/review", json={"ids": ["x"], "review": "right"})
    assert_openai_error(response, 401, "authentication_error")
