"""In front of vLLM the proxy follows the adapter registry: generations go to the active
adapter, verdicts and repairs to its base model (the frozen copy), switched without a restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import create_engine, update
from sqlalchemy.orm import Session

from service.store.models import AdapterVersion
from tests.api.conftest import ProxyFactory
from tests.fakes.upstream import FakeUpstream

ASK = [{"role": "user", "content": "Hello?"}]


def activate(db_url: str, name: str) -> None:
    engine = create_engine(db_url.replace("+aiosqlite", ""))
    with Session(engine) as session, session.begin():
        session.execute(update(AdapterVersion).values(status="retired"))
        session.add(AdapterVersion(
            name=name, base_model="base-model", path=f"/adapters/{name}", status="active",
            activated_at=datetime.now(UTC),
        ))


def models_sent(fake: FakeUpstream) -> tuple[str, str]:
    return fake.calls("generation")[-1].body["model"], fake.calls("verdict")[-1].body["model"]


def test_policy_follows_the_active_adapter(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(judge_model=None, adapter_poll_s=0.1)
    client = proxy.client()
    client.chat.completions.create(model="client-choice", messages=ASK)
    # Nothing active yet: the client's model generates, the upstream's one base model judges.
    assert models_sent(fake) == ("client-choice", "base-model")

    for version in ("conscience-v1", "conscience-v2"):
        activate(proxy.settings.store.db_url, version)
        deadline = time.monotonic() + 5
        while True:
            # A name the upstream serves: with a policy named, an unserved one is a 404.
            completion = client.chat.completions.create(model="base-model", messages=ASK)
            if models_sent(fake)[0] == version or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert models_sent(fake) == (version, "base-model")
        assert completion.model_extra["conscience"]["judge_model"] == "base-model"


def test_configured_names_win_over_the_registry(start_proxy: ProxyFactory, fake: FakeUpstream) -> None:
    proxy = start_proxy(model="pinned-policy", judge_model="pinned-judge")
    activate(proxy.settings.store.db_url, "conscience-v1")
    time.sleep(0.2)
    proxy.client().chat.completions.create(model="base-model", messages=ASK)
    assert models_sent(fake) == ("pinned-policy", "pinned-judge")
