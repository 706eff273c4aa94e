"""Publishing to vLLM through its runtime LoRA endpoints, against the loopback fake server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.responses import Response

from service.adapters.publish import PublishError, VllmPublisher
from service.adapters.registry import VersionDraft, get_version, list_versions, record_version, rollback_target
from service.store.db import Database
from service.store.models import AdapterStatus, AdapterVersion
from tests.fakes.upstream import FakeUpstream


class UnlistingUpstream(FakeUpstream):
    """A vLLM that accepts an adapter but does not list it (a load that did not take)."""

    def _models(self, body: dict) -> Response:
        loaded, self.adapters = self.adapters, {}
        try:
            return super()._models(body)
        finally:
            self.adapters = loaded


@pytest.fixture(scope="module")
def vllm() -> Iterator[FakeUpstream]:
    with FakeUpstream(base_model="Qwen/Qwen2.5-7B-Instruct") as server:
        yield server


@pytest.fixture
def fake(vllm: FakeUpstream) -> FakeUpstream:
    vllm.reset()
    return vllm


async def add_versions(db: Database, count: int) -> list[AdapterVersion]:
    """conscience-v1 … v<count>, each trained from the one before (as nightly runs make them)."""
    versions: list[AdapterVersion] = []
    for number in range(1, count + 1):
        draft = VersionDraft(
            name=f"conscience-v{number}",
            base_model="Qwen/Qwen2.5-7B-Instruct",
            path=Path("/srv/adapters") / f"conscience-v{number}",
            parent_id=versions[-1].id if versions else None,
            passed_gate=True,
        )
        versions.append(await record_version(db, draft, []))
    return versions


def admin_calls(fake: FakeUpstream) -> list[tuple[str, str, object]]:
    return [(r.method, r.path, r.body) for r in fake.requests]


async def statuses(db: Database) -> dict[str, str]:
    return {version.name: version.status for version in await list_versions(db)}


async def test_load_then_check_the_listing_then_activate(db: Database, fake: FakeUpstream) -> None:
    [version] = await add_versions(db, 1)
    publisher = VllmPublisher(fake.url, adapters_dir_seen_by_vllm=Path("/vllm/adapters"))

    active = await publisher.activate(db, version)

    assert admin_calls(fake) == [
        ("GET", "/v1/models", None),
        ("POST", "/v1/load_lora_adapter", {"lora_name": "conscience-v1", "lora_path": "/vllm/adapters/conscience-v1"}),
        ("GET", "/v1/models", None),
    ]
    assert active.status == AdapterStatus.ACTIVE
    assert fake.adapters == {"conscience-v1": "/vllm/adapters/conscience-v1"}


async def test_an_adapter_vllm_does_not_list_is_not_activated(db: Database) -> None:
    [version] = await add_versions(db, 1)
    with UnlistingUpstream() as unlisting:
        with pytest.raises(PublishError, match="does not list it"):
            await VllmPublisher(unlisting.origin).activate(db, version)
        assert [r.path for r in unlisting.requests][-1] == "/v1/models"
    assert (await get_version(db, "conscience-v1")).status == AdapterStatus.CANDIDATE


async def test_a_refusing_vllm_activates_nothing(db: Database, fake: FakeUpstream) -> None:
    [version] = await add_versions(db, 1)
    fake.fail_status = 503
    with pytest.raises(PublishError, match="503: scripted failure 503"):
        await VllmPublisher(fake.url).activate(db, version)
    assert (await get_version(db, "conscience-v1")).status == AdapterStatus.CANDIDATE


async def test_only_the_newest_versions_stay_loaded_and_rollback_reloads_an_unloaded_one(
    db: Database, fake: FakeUpstream
) -> None:
    versions = await add_versions(db, 4)
    publisher = VllmPublisher(fake.url, keep_loaded=2)
    for version in versions:
        await publisher.activate(db, version)

    assert set(fake.adapters) == {"conscience-v3", "conscience-v4"}
    unloads = [r.body["lora_name"] for r in fake.requests if r.path == "/v1/unload_lora_adapter"]
    assert unloads == ["conscience-v1", "conscience-v2"]
    assert await statuses(db) == {
        "conscience-v1": "retired", "conscience-v2": "retired",
        "conscience-v3": "retired", "conscience-v4": "active",
    }

    # Rollback to v3: still loaded, so no load call; v4 stays loaded as the newest.
    fake.requests.clear()
    await publisher.activate(db, await rollback_target(db))
    assert [r.path for r in fake.requests if r.method == "POST"] == []
    assert (await statuses(db))["conscience-v3"] == "active"

    # Rollback to v2: unloaded earlier, so loaded again under its own (immutable) name.
    await publisher.activate(db, await rollback_target(db))
    posts = [(r.path, r.body["lora_name"]) for r in fake.requests if r.method == "POST"]
    assert posts == [
        ("/v1/load_lora_adapter", "conscience-v2"),
        ("/v1/unload_lora_adapter", "conscience-v3"),
    ]
    assert set(fake.adapters) == {"conscience-v2", "conscience-v4"}
    assert (await statuses(db))["conscience-v2"] == "active"
