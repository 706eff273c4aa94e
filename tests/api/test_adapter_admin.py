"""The adapter admin API in front of a (fake) vLLM: load there, check, activate, roll back."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from service.store.models import AdapterVersion
from tests.api.conftest import Proxy, ProxyFactory
from tests.fakes.upstream import FakeUpstream

ADMIN = "admin-secret-for-tests"
ASK = [{"role": "user", "content": "Hello?"}]


def seed(proxy: Proxy) -> None:
    engine = create_engine(proxy.settings.store.db_url.replace("+aiosqlite", ""))
    with Session(engine) as session, session.begin():
        v1 = AdapterVersion(id="v1", name="conscience-v1", base_model="base-model", path="/a/v1",
                            status="active", activated_at=datetime.now(UTC))
        v2 = AdapterVersion(id="v2", name="conscience-v2", base_model="base-model", path="/a/v2",
                            status="candidate", parent_id="v1")
        bad = AdapterVersion(id="v3", name="conscience-v3", base_model="base-model", path="/a/v3",
                             status="failed", parent_id="v2", failure_reason="refusals rose")
        session.add_all([v1, v2, bad])


def admin(proxy: Proxy, method: str, path: str) -> httpx.Response:
    return httpx.request(method, f"{proxy.server.origin}/admin/adapters{path}",
                         headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)


def test_activate_and_roll_back_through_vllm(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(admin_key=ADMIN, judge_model=None, adapter_poll_s=60)
    seed(proxy)

    listed = admin(proxy, "GET", "").json()["data"]
    assert {v["name"]: v["parent"] for v in listed} == {
        "conscience-v1": None, "conscience-v2": "conscience-v1", "conscience-v3": "conscience-v2"}

    activated = admin(proxy, "POST", "/conscience-v2/activate")
    assert activated.status_code == 200 and activated.json()["status"] == "active"
    assert fake.adapters == {"conscience-v2": "/a/v2"}
    loads = [r for r in fake.requests if r.path == "/v1/load_lora_adapter"]
    assert loads[0].body == {"lora_name": "conscience-v2", "lora_path": "/a/v2"}
    proxy.client().chat.completions.create(model="base-model", messages=ASK)  # no poll needed
    assert fake.calls("generation")[-1].body["model"] == "conscience-v2"
    assert fake.calls("verdict")[-1].body["model"] == "base-model"

    rolled = admin(proxy, "POST", "/rollback")
    assert rolled.status_code == 200 and rolled.json()["name"] == "conscience-v1"
    proxy.client().chat.completions.create(model="base-model", messages=ASK)
    assert fake.calls("generation")[-1].body["model"] == "conscience-v1"


def test_activation_errors_are_openai_shaped(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(admin_key=ADMIN)
    seed(proxy)
    missing = admin(proxy, "POST", "/conscience-v9/activate")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "adapter_not_found"
    failed = admin(proxy, "POST", "/conscience-v3/activate")
    assert failed.status_code == 409 and "refusals rose" in failed.json()["error"]["message"]
    fake.fail_status = 500
    refused = admin(proxy, "POST", "/conscience-v2/activate")
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "adapter_publish_failed"
    fake.fail_status = None
    assert admin(proxy, "GET", "").json()["data"][1]["status"] == "candidate"  # not activated
    no_key = httpx.get(f"{proxy.server.origin}/admin/adapters")
    assert no_key.status_code == 401
