"""Request ids (issue 26): the id that names a request's records is always ours; the id a client
offers (X-Client-Request-Id, or the X-Request-Id older clients send) is a separate correlation
field, stored, sent upstream and echoed back; on SQLite and PostgreSQL through the same code."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.logs import JsonFormatter
from service.store.db import Database
from service.store.models import Check, Triple
from tests.api.conftest import ASK_BODY, HARMFUL, Proxy, ProxyFactory
from tests.fakes.upstream import FakeUpstream
from tests.store.databases import db_url  # noqa: F401  (pytest fixture)

OURS = re.compile(r"^[0-9a-f]{32}$")


async def rows(url: str, model: type, count: int) -> list[Any]:
    """The rows of `model` once `count` are there (the writer inserts in the background)."""
    db = Database(url)
    try:
        for _ in range(200):
            async with db.sessions() as session:
                found = list(await session.scalars(select(model)))
            if len(found) >= count:
                return found
            await asyncio.sleep(0.05)
        return found
    finally:
        await db.dispose()


async def ask(proxy: Proxy, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{proxy.url}/chat/completions", json=ASK_BODY, headers=headers)


async def test_a_clients_id_is_a_correlation_field_not_the_records_id(
    db_url: str, start_proxy: ProxyFactory, fake: FakeUpstream  # noqa: F811
) -> None:
    proxy = start_proxy(db_url=db_url)
    fake.policy_answer = HARMFUL  # repaired: a check and a triple
    response = await ask(proxy, {"X-Client-Request-Id": "client-req-7"})
    assert response.status_code == 200
    ours = response.headers["x-request-id"]
    assert OURS.match(ours) and response.headers["x-client-request-id"] == "client-req-7"
    assert response.json()["conscience"]["request_id"] == ours
    [check] = await rows(db_url, Check, 1)
    [triple] = await rows(db_url, Triple, 1)
    assert (check.request_id, check.client_request_id) == (ours, "client-req-7")
    assert (triple.request_id, triple.client_request_id) == (ours, "client-req-7")


async def test_the_same_client_id_twice_names_two_requests(
    start_proxy: ProxyFactory, fake: FakeUpstream
) -> None:
    proxy = start_proxy()
    fake.policy_answer = "Talk to them."
    first = await ask(proxy, {"X-Request-Id": "chosen-by-the-client"})  # the older header
    second = await ask(proxy, {"X-Request-Id": "chosen-by-the-client"})
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and "chosen-by-the-client" not in ids
    assert first.headers["x-client-request-id"] == "chosen-by-the-client"
    checks = await rows(proxy.settings.store.db_url, Check, 2)
    assert {c.request_id for c in checks} == ids
    assert {c.client_request_id for c in checks} == {"chosen-by-the-client"}


async def test_upstream_calls_carry_our_id_and_the_clients(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = HARMFUL
    response = await ask(proxy, {"X-Client-Request-Id": "client-req-8"})
    calls = fake.calls("verdict") + fake.calls("generation")
    assert len(calls) >= 4  # generation, verdict, repair, verdict
    assert {c.headers["x-request-id"] for c in calls} == {response.headers["x-request-id"]}
    assert {c.headers["x-client-request-id"] for c in calls} == {"client-req-8"}


async def test_an_unsafe_client_id_is_ignored(proxy: Proxy, fake: FakeUpstream) -> None:
    fake.policy_answer = "Talk to them."
    for unsafe in ("has space", "x" * 129, "semi;colon"):
        response = await ask(proxy, {"X-Client-Request-Id": unsafe})
        assert response.status_code == 200 and "x-client-request-id" not in response.headers
    checks = await rows(proxy.settings.store.db_url, Check, 3)
    assert [c.client_request_id for c in checks] == [None, None, None]


async def test_an_error_response_carries_both_ids(proxy: Proxy) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{proxy.url}/chat/completions", content=b"{", headers={"X-Client-Request-Id": "bad-body-1"}
        )
    assert response.status_code == 400
    assert OURS.match(response.headers["x-request-id"])
    assert response.headers["x-client-request-id"] == "bad-body-1"


async def test_the_access_log_carries_both_ids(
    proxy: Proxy, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "conscience.access")
    response = await ask(proxy, {"X-Client-Request-Id": "client-req-9"})
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "conscience.access"]
    assert {"request_id": response.headers["x-request-id"], "client_request_id": "client-req-9"}.items() <= (
        lines[-1].items()
    )
