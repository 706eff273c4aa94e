"""A deterministic sweep beside the schemathesis fuzz (test_fuzz_openapi.py, which needs the
optional schemathesis): every operation of the served OpenAPI document that takes a JSON body —
/v1/responses and the admin API, with the admin key, included — gets hostile bodies (not JSON,
not an object, each declared field given every wrong type and extreme value) and must answer
below 500, in OpenAI's error shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from service.openapi_spec import served_openapi
from tests.api.conftest import ASK_BODY, ProxyFactory

ADMIN_KEY = "admin-key-for-the-hostile-sweep"
WRONG_VALUES: list[Any] = [None, True, -1, 0, 2**63, 1e308, "", "x" * 10_000, [], [None], {}, {"": None}]


def _json_operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    spec = served_openapi()
    schemas = spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            body = ((operation.get("requestBody") or {}).get("content") or {}).get("application/json")
            if body is None:
                continue
            ref = body["schema"].get("$ref", "")
            schema = schemas.get(ref.rsplit("/", 1)[-1], {})
            yield method.upper(), path.replace("{", "").replace("}", ""), schema.get("properties") or {}


def _bodies(properties: dict[str, Any]) -> Iterator[bytes]:
    yield b"{not json"
    yield b"[1, 2]"
    yield b'"a string"'
    yield b"null"
    base = {key: value for key, value in ASK_BODY.items() if key in properties}
    if "input" in properties:
        base["input"] = "Hi"
    for name in properties:
        for value in WRONG_VALUES:
            yield orjson.dumps({**base, name: value})


OPERATIONS = list(_json_operations())


def test_the_sweep_covers_responses_and_the_admin_api() -> None:
    paths = {path for _, path, _ in OPERATIONS}
    assert "/v1/responses" in paths and any(path.startswith("/admin/") for path in paths), paths


@pytest.mark.parametrize(("method", "path", "properties"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_hostile_bodies_get_no_5xx(
    start_proxy: ProxyFactory, method: str, path: str, properties: dict[str, Any]
) -> None:
    proxy = start_proxy(admin_key=ADMIN_KEY)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    with httpx.Client(base_url=proxy.server.origin, headers=headers, timeout=30) as client:
        for body in _bodies(properties):
            response = client.request(method, path, content=body)
            assert response.status_code < 500, (method, path, body[:200], response.text[:500])
            if response.status_code >= 400 and response.headers["content-type"].startswith("application/json"):
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}, response.text
